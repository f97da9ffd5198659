package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// What a process used, read from /proc (Linux): CPU time, resident memory.

// procSample is a process's CPU time and memory at one moment.
type procSample struct {
	cpu          time.Duration // user + system
	rssKB, hwmKB int64         // resident set, and its peak
}

// readProc reads /proc/PID/stat and /proc/PID/status.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name, in parentheses, may hold spaces: the fields
	// after it are counted from its closing parenthesis.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	s.cpu = time.Duration(utime+stime) * time.Second / time.Duration(clockTicks())
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.rssKB = n
		case "VmHWM":
			s.hwmKB = n
		}
	}
	return s, nil
}

// clockTicks is the unit of the CPU times in /proc/PID/stat (USER_HZ), from
// the auxiliary vector the kernel gave this process; 100 when unreadable.
func clockTicks() int64 {
	const atClkTck = 17
	b, err := os.ReadFile("/proc/self/auxv")
	for ; err == nil && len(b) >= 16; b = b[16:] {
		if binary.NativeEndian.Uint64(b) == atClkTck {
			if v := int64(binary.NativeEndian.Uint64(b[8:])); v > 0 {
				return v
			}
		}
	}
	return 100
}

// usage is what a process used between two samples over wall seconds.
func usage(pid int, a, b procSample, wall time.Duration, ops int64) *Usage {
	cpu := (b.cpu - a.cpu).Seconds()
	u := &Usage{PID: pid, CPUSeconds: round(cpu, 3), CPUPercent: round(100*cpu/wall.Seconds(), 1),
		RSSMB: round(float64(b.rssKB)/1024, 1), PeakRSSMB: round(float64(b.hwmKB)/1024, 1)}
	if ops > 0 {
		u.CPUPerOpMs = round(1000*cpu/float64(ops), 4)
	}
	return u
}

// listenerPID finds the process of this machine listening on the port of
// endpoint, when endpoint's host is this machine: from the socket's inode in
// /proc/net/tcp{,6} to the process holding it in /proc/*/fd.
func listenerPID(endpoint string) (int, error) {
	host, portText, err := net.SplitHostPort(endpoint)
	if err != nil {
		return 0, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q", portText)
	}
	if !isLocal(host) {
		return 0, fmt.Errorf("%s is not this machine", host)
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listening(f, uint16(port), inodes)
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no process of this machine listens on port %d", port)
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(inode, "]")] {
			pid, err := strconv.Atoi(strings.Split(fd, "/")[2])
			if err == nil {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("the process listening on port %d is not readable (another user's?)", port)
}

// listening adds the inodes of the sockets listening on port in a
// /proc/net/tcp table to inodes.
func listening(table string, port uint16, inodes map[string]bool) {
	f, err := os.Open(table)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
			continue
		}
		_, p, _ := strings.Cut(fs[1], ":")
		if n, err := strconv.ParseUint(p, 16, 16); err == nil && uint16(n) == port {
			inodes[fs[9]] = true
		}
	}
}

// isLocal reports whether host names this machine.
func isLocal(host string) bool {
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return false
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	local, _ := net.InterfaceAddrs()
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// monitor samples the server's and dpsd-load's processes around a phase,
// and the server's allocations and profiles through its pprof endpoint.
type monitor struct {
	pid        int    // the server's; 0 when unknown
	pprof      string // base URL of the server's pprof endpoint
	profileDir string
	label      string // names the profile files
}

// newMonitor returns a monitor of the server with process pid (0: the one
// listening on endpoint, if local), and a note when it cannot watch it.
func newMonitor(pid int, endpoint, pprofURL, profileDir string) (*monitor, string) {
	m := &monitor{pid: pid, pprof: strings.TrimSuffix(pprofURL, "/"), profileDir: profileDir}
	note := ""
	if pid == 0 {
		var err error
		if m.pid, err = listenerPID(endpoint); err != nil {
			note = fmt.Sprintf("server CPU and memory not measured: %v (give --server-pid)", err)
		}
	}
	if m.pid != 0 {
		if _, err := readProc(m.pid); err != nil {
			note = fmt.Sprintf("server CPU and memory not measured: %v", err)
			m.pid = 0
		}
	}
	return m, note
}

// probe is a phase being watched.
type probe struct {
	m              *monitor
	start          time.Time
	server, self   procSample
	serverOK       bool
	mallocs, bytes uint64
	allocsOK       bool
	profiles       chan profileResult
}

func (m *monitor) start(phase string, d time.Duration) *probe {
	p := &probe{m: m}
	if m.pprof != "" {
		p.mallocs, p.bytes, p.allocsOK = memStats(m.pprof)
		if m.profileDir != "" && phase == "workload" && d > 0 {
			p.profiles = m.fetchProfiles(d)
		}
	}
	if m.pid != 0 {
		var err error
		p.server, err = readProc(m.pid)
		p.serverOK = err == nil
	}
	p.self, _ = readProc(os.Getpid())
	p.start = time.Now()
	return p
}

// stop returns what the server (nil when not watched) and dpsd-load used.
func (p *probe) stop(ops int64) (server, self *Usage) {
	wall := time.Since(p.start)
	if now, err := readProc(os.Getpid()); err == nil {
		self = usage(os.Getpid(), p.self, now, wall, ops)
	}
	if p.serverOK {
		if now, err := readProc(p.m.pid); err == nil {
			server = usage(p.m.pid, p.server, now, wall, ops)
		}
	}
	if server == nil && p.m.pprof != "" {
		server = &Usage{}
	}
	if server != nil && p.allocsOK && ops > 0 {
		if mallocs, bytes, ok := memStats(p.m.pprof); ok {
			server.AllocsPerOp = round(float64(mallocs-p.mallocs)/float64(ops), 1)
			server.AllocBytesPerOp = round(float64(bytes-p.bytes)/float64(ops), 0)
		}
	}
	if p.profiles != nil {
		for range 2 {
			r := <-p.profiles
			if r.err != nil {
				server.ProfileError = strings.TrimPrefix(server.ProfileError+"; "+r.err.Error(), "; ")
			} else {
				server.Profiles = append(server.Profiles, r.file)
			}
		}
		slices.Sort(server.Profiles)
	}
	return server, self
}
