package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store/dump"
)

// The scale benchmark: `dpsd-load scale` builds an instance of many
// enrollments, registration records, enrollment groups and verified CA
// certificates in --dir, through `dpsd import` of a generated export, starts
// `dpsd serve` on it and measures its start-up time, its memory, and
// registration throughput of devices enrolled in it:
//
//   - symmetric-key: devices of individual enrollments picked at random
//     among all of them (each with a registration record already: the
//     registrations are re-registrations);
//   - x509: new devices with certificates issued by CAs picked across the
//     verified CA certificates, each found through its enrollment group.
//
// The instance is kept: a second run on the same --dir measures again
// without building it (--rebuild builds it anew).

type scaleOptions struct {
	dir, dpsd                          string
	enrollments, registrations, groups int
	rebuild, keepDump                  bool
	workloads                          string
	transport                          string
	keepAlive                          bool
	profileDir                         string
	load                               loadFlags
}

func parseScaleFlags(args []string, stderr io.Writer) (scaleOptions, error) {
	var o scaleOptions
	fs := flag.NewFlagSet("dpsd-load scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dir, "dir", "", "directory of the instance: its database (data/), scale.json (keys and seed), serve.log")
	fs.StringVar(&o.dpsd, "dpsd", "", "the dpsd binary (default: dpsd beside dpsd-load, else on PATH)")
	fs.IntVar(&o.enrollments, "enrollments", 1000000, "individual symmetric-key enrollments")
	fs.IntVar(&o.registrations, "registrations", -1, "registration records, of the first enrollments; -1: one per enrollment")
	fs.IntVar(&o.groups, "groups", 10000, "X.509 enrollment groups, each referencing its own verified CA certificate")
	fs.BoolVar(&o.rebuild, "rebuild", false, "build the instance anew even if --dir holds one")
	fs.BoolVar(&o.keepDump, "keep-dump", false, "keep the generated export (scale.jsonl; it holds every key of the instance)")
	fs.StringVar(&o.workloads, "workloads", "symmetric-key,x509", "workloads to measure, comma-separated: symmetric-key, x509")
	fs.StringVar(&o.transport, "transport", "https", "https or mqtt")
	fs.BoolVar(&o.keepAlive, "keep-alive", false, "keep connections alive (see dpsd-load -h)")
	fs.StringVar(&o.profileDir, "profile-dir", "", "save CPU and allocation profiles of each workload phase here (needs --duration)")
	o.load.add(fs, "registrations per workload phase, of distinct devices (with --duration: the devices picked, reused in turn)")
	usage := "Usage: dpsd-load scale --dir DIR [flags]\n\nBuilds an instance of many enrollments in DIR through dpsd import (once), starts dpsd serve on it,\nand measures its start-up, memory and registration throughput (docs/benchmarks.md).\n\n"
	if err := parse(fs, args, usage); err != nil {
		return o, err
	}
	if o.registrations < 0 {
		o.registrations = o.enrollments
	}
	if err := o.load.check(); err != nil {
		return o, err
	}
	switch {
	case o.dir == "":
		return o, usagef("--dir is required: the directory of the instance")
	case o.enrollments < 1 || o.registrations > o.enrollments:
		return o, usagef("--enrollments %d, --registrations %d: give at least one enrollment, and at most one record per enrollment", o.enrollments, o.registrations)
	case o.groups < 1 || o.groups > 99999:
		return o, usagef("--groups %d: give 1 to 99999", o.groups)
	case o.transport != "https" && o.transport != "mqtt":
		return o, usagef("--transport %q: use https or mqtt", o.transport)
	case o.profileDir != "" && o.load.duration == 0:
		return o, usagef("--profile-dir needs --duration (the profiles cover the workload phase)")
	case o.profileDir != "" && o.load.rounds > 1:
		return o, usagef("--profile-dir needs --rounds 1 (the profiles cover the workload phase in one piece)")
	}
	for _, w := range strings.Split(o.workloads, ",") {
		if w != "symmetric-key" && w != "x509" {
			return o, usagef("--workloads: %q is not symmetric-key or x509", w)
		}
	}
	return o, nil
}

// scaleMeta is scale.json: what the load needs to know about the instance
// it did not keep in the database (the key seed, some CA keys), and how
// the build went. It holds keys: it is written 0600.
type scaleMeta struct {
	Enrollments   int       `json:"enrollments"`
	Registrations int       `json:"registrations"`
	Groups        int       `json:"groups"`
	Seed          []byte    `json:"seed"`
	IDScope       string    `json:"idScope"`
	ServerCAPEM   string    `json:"serverCaPem"`
	CAs           []scaleCA `json:"cas"`
	Build         Build     `json:"build"`
}

// Build is how the instance was built.
type Build struct {
	BuiltAt         time.Time `json:"builtAt"`
	GenerateSeconds float64   `json:"generateSeconds"`
	DumpMB          float64   `json:"dumpMB"`
	ImportSeconds   float64   `json:"importSeconds"`
	ImportPeakRSSMB float64   `json:"importPeakRssMB"`
	// Reused says this run measured an instance an earlier run built.
	Reused bool `json:"reused,omitempty"`
}

// ScaleReport is what a scale run measured.
type ScaleReport struct {
	Dir            string `json:"dir"`
	Enrollments    int    `json:"enrollments"`
	Registrations  int    `json:"registrations"`
	Groups         int    `json:"enrollmentGroups"`
	CACertificates int    `json:"caCertificates"`
	Build          Build  `json:"build"`
	// StartupSeconds runs from starting `dpsd serve` to its first healthy
	// answer.
	StartupSeconds  float64   `json:"startupSeconds"`
	RSSAfterStartMB float64   `json:"rssAfterStartMB"`
	RSSAfterLoadMB  float64   `json:"rssAfterLoadMB"`
	PeakRSSMB       float64   `json:"peakRssMB"`
	Workloads       []*Report `json:"workloads"`
}

// sampleCAs is how many CA keys scale.json keeps, spread across the CAs.
const sampleCAs = 100

func runScale(ctx context.Context, o scaleOptions, stdout, stderr io.Writer) error {
	bin, err := dpsdBinary(o.dpsd)
	if err != nil {
		return err
	}
	meta, err := buildScale(ctx, o, bin, stderr)
	if err != nil {
		return err
	}
	srv, err := startServe(ctx, bin, o.dir, meta, o.transport == "mqtt")
	if err != nil {
		return err
	}
	defer srv.stop()
	rep := &ScaleReport{Dir: o.dir, Enrollments: meta.Enrollments, Registrations: meta.Registrations, Groups: meta.Groups,
		CACertificates: meta.Groups, Build: meta.Build, StartupSeconds: round(srv.startup.Seconds(), 3)}
	if s, err := readProc(srv.pid()); err == nil {
		rep.RSSAfterStartMB = round(float64(s.rssKB)/1024, 1)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(meta.ServerCAPEM))
	endpoint := srv.https
	if o.transport == "mqtt" {
		endpoint = srv.mqtt
	}
	p := o.load.plan()
	for _, w := range strings.Split(o.workloads, ",") {
		fl, err := scaleFleet(meta, w, o.load.devices)
		if err != nil {
			return err
		}
		mon, note := newMonitor(srv.pid(), endpoint, "http://"+srv.pprof, o.profileDir)
		mon.label = "scale-" + o.transport + "-" + w + "-" + connections(o.keepAlive)
		r := &Report{Transport: o.transport, Attestation: w, Connections: connections(o.keepAlive), Endpoint: endpoint,
			Concurrency: p.concurrency, Note: note}
		t := newTarget(o.transport, o.keepAlive, endpoint, meta.IDScope, roots, fl)
		if err := benchmark(ctx, r, t, p, mon, o.load.baseline || o.load.handshakeOnly, !o.load.handshakeOnly); err != nil {
			return fmt.Errorf("%s: %w (server log: %s)", w, err, srv.logFile)
		}
		rep.Workloads = append(rep.Workloads, r)
	}
	if s, err := readProc(srv.pid()); err == nil {
		rep.RSSAfterLoadMB, rep.PeakRSSMB = round(float64(s.rssKB)/1024, 1), round(float64(s.hwmKB)/1024, 1)
	}
	if err := rep.write(stdout, o.load.output); err != nil {
		return err
	}
	var errs []error
	for _, r := range rep.Workloads {
		if err := r.check(o.load.maxErrors); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Attestation, err))
		}
	}
	return errors.Join(errs...)
}

func (r *ScaleReport) write(w io.Writer, format string) error {
	if format == "json" {
		return writeJSON(w, r)
	}
	fmt.Fprintf(w, "instance in %s: %d enrollments, %d registration records, %d enrollment groups, %d verified CA certificates\n",
		r.Dir, r.Enrollments, r.Registrations, r.Groups, r.CACertificates)
	b := r.Build
	reused := ""
	if b.Reused {
		reused = fmt.Sprintf(" (built %s, reused)", b.BuiltAt.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "build: export generated in %.2f s (%.1f MB), dpsd import %.2f s (peak RSS %.1f MB)%s\n",
		b.GenerateSeconds, b.DumpMB, b.ImportSeconds, b.ImportPeakRSSMB, reused)
	fmt.Fprintf(w, "dpsd serve: start-up %.3f s, RSS %.1f MB after start, %.1f MB after the load (peak %.1f MB)\n",
		r.StartupSeconds, r.RSSAfterStartMB, r.RSSAfterLoadMB, r.PeakRSSMB)
	for _, rep := range r.Workloads {
		fmt.Fprintln(w)
		rep.writeTable(w)
	}
	return nil
}

// dpsdBinary finds the dpsd binary: the flag, else beside this executable,
// else on PATH.
func dpsdBinary(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "dpsd")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("dpsd")
	if err != nil {
		return "", usagef("no dpsd binary beside dpsd-load or on PATH: give --dpsd (go build ./cmd/dpsd)")
	}
	return p, nil
}

// buildScale returns the instance of o.dir, building it when it holds none
// (or --rebuild): generate the export, `dpsd import` it, write scale.json.
func buildScale(ctx context.Context, o scaleOptions, bin string, stderr io.Writer) (*scaleMeta, error) {
	metaFile := filepath.Join(o.dir, "scale.json")
	if !o.rebuild {
		b, err := os.ReadFile(metaFile)
		if err == nil {
			var m scaleMeta
			if err := json.Unmarshal(b, &m); err != nil {
				return nil, fmt.Errorf("%s: %w", metaFile, err)
			}
			if m.Enrollments != o.enrollments || m.Registrations != o.registrations || m.Groups != o.groups {
				return nil, usagef("%s holds an instance of %d enrollments, %d records and %d groups: give those, or --rebuild, or another --dir",
					o.dir, m.Enrollments, m.Registrations, m.Groups)
			}
			m.Build.Reused = true
			return &m, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.dir, 0o700); err != nil {
		return nil, err
	}
	data := filepath.Join(o.dir, "data")
	os.Remove(metaFile)
	if err := os.RemoveAll(data); err != nil {
		return nil, err
	}
	m := &scaleMeta{Enrollments: o.enrollments, Registrations: o.registrations, Groups: o.groups, Seed: make([]byte, 32)}
	rand.Read(m.Seed)
	m.Build.BuiltAt = time.Now().UTC()

	// The export.
	t0 := time.Now()
	dumpFile := filepath.Join(o.dir, "scale.jsonl")
	if err := generateExport(ctx, m, dumpFile); err != nil {
		return nil, err
	}
	if !o.keepDump {
		defer os.Remove(dumpFile)
	}
	m.Build.GenerateSeconds = round(time.Since(t0).Seconds(), 2)
	if fi, err := os.Stat(dumpFile); err == nil {
		m.Build.DumpMB = round(float64(fi.Size())/(1<<20), 1)
	}

	// dpsd import, with its progress bar on a terminal.
	fmt.Fprintf(stderr, "importing %d enrollments, %d registration records and %d groups with their CAs into %s\n", o.enrollments, o.registrations, o.groups, data)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "import", "--data", data, dumpFile)
	cmd.Stdout, cmd.Stderr = &out, stderr
	t0 = time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s import: %w\n%s", bin, err, out.Bytes())
	}
	m.Build.ImportSeconds = round(time.Since(t0).Seconds(), 2)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.Build.ImportPeakRSSMB = round(float64(ru.Maxrss)/1024, 1) // kB on Linux
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFile(metaFile, b, 0o600, true); err != nil {
		return nil, err
	}
	return m, nil
}

// generateExport writes the instance of m (made up by a synthStore) in the
// export format, with dump.Export itself, and fills in what the load needs.
func generateExport(ctx context.Context, m *scaleMeta, file string) error {
	keep := make([]int, 0, sampleCAs)
	for k := range min(sampleCAs, m.Groups) {
		keep = append(keep, k*m.Groups/min(sampleCAs, m.Groups))
	}
	st, keys, err := newSynthStore(m.Enrollments, m.Registrations, m.Groups, m.Seed, keep)
	if err != nil {
		return err
	}
	inst, _, err := instance.Ensure(ctx, st, nil)
	if err != nil {
		return err
	}
	m.IDScope, m.ServerCAPEM = inst.IDScope, string(inst.ServerCACertPEM)
	if m.CAs, err = st.keptCAs(keys); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := dump.Export(ctx, st, w, dump.ExportOptions{DpsdVersion: "dpsd-load scale"}); err != nil {
		f.Close()
		return fmt.Errorf("generating the export: %w", err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// scaleFleet returns the devices of a workload on the scale instance.
func scaleFleet(m *scaleMeta, workload string, n int) (*fleet, error) {
	switch workload {
	case "symmetric-key":
		// Enrolled devices picked at random among all of them, so that
		// their rows are spread across the database.
		n = min(n, m.Enrollments)
		picked := make([]int, 0, n)
		seen := map[int]bool{}
		for len(picked) < n {
			if i := mrand.IntN(m.Enrollments); !seen[i] {
				seen[i] = true
				picked = append(picked, i)
			}
		}
		return &fleet{n: n, at: func(i int) device {
			id := scaleDeviceID(picked[i])
			return device{id: id, key: scaleKey(m.Seed, "primary", id)}
		}}, nil
	case "x509":
		type ca struct {
			cert *x509.Certificate
			key  crypto.Signer
		}
		cas := make([]ca, len(m.CAs))
		for i, c := range m.CAs {
			cert, err := pki.ParseCertificate(c.CertPEM)
			if err != nil {
				return nil, err
			}
			key, err := pki.ParsePrivateKeyPEM([]byte(c.KeyPEM), nil)
			if err != nil {
				return nil, err
			}
			cas[i] = ca{cert, key}
		}
		// New devices each run: a first registration through a group.
		prefix := fmt.Sprintf("scale-x509-%d-", time.Now().UnixNano()%1e9)
		devs, err := issueDevices(n, func(i int) string { return fmt.Sprintf("%s%07d", prefix, i) },
			func(i int) (*x509.Certificate, crypto.Signer) { c := cas[i%len(cas)]; return c.cert, c.key })
		if err != nil {
			return nil, err
		}
		return &fleet{n: n, at: func(i int) device { return devs[i] }}, nil
	}
	return nil, fmt.Errorf("workload %q", workload)
}

// serveProcess is a running `dpsd serve` on the scale instance.
type serveProcess struct {
	cmd         *exec.Cmd
	https, mqtt string
	pprof       string
	startup     time.Duration
	logFile     string
	done        chan struct{} // closed when the process has exited
	waitErr     error
	stopOnce    sync.Once
}

func (s *serveProcess) pid() int { return s.cmd.Process.Pid }

// startServe starts dpsd serve on dir/data, on free ports of 127.0.0.1,
// and returns once it answers /healthz. Its profiling endpoints are on, for
// allocations per operation and profiles.
func startServe(ctx context.Context, bin, dir string, m *scaleMeta, withMQTT bool) (*serveProcess, error) {
	https, err := freePort()
	if err != nil {
		return nil, err
	}
	mqtt := ""
	if withMQTT {
		if mqtt, err = freePort(); err != nil {
			return nil, err
		}
	}
	pprof, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &serveProcess{https: https, mqtt: mqtt, pprof: pprof, logFile: filepath.Join(dir, "serve.log"), done: make(chan struct{})}
	logf, err := os.Create(s.logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	s.cmd = exec.Command(bin, "serve", "--data", filepath.Join(dir, "data"), "--https-addr", https, "--mqtt-addr", mqtt, "--pprof-addr", pprof, "--log-level", "warn")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(m.ServerCAPEM))
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, DisableKeepAlives: true}}
	t0 := time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.waitErr = s.cmd.Wait(); close(s.done) }()
	deadline := time.After(2 * time.Minute)
	for {
		if resp, err := hc.Get("https://" + https + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.startup = time.Since(t0)
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("dpsd serve stopped before answering: %v (log: %s)", s.waitErr, s.logFile)
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("dpsd serve did not answer /healthz within 2 minutes (log: %s)", s.logFile)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// stop ends the server with SIGTERM (SIGKILL after 30 s).
func (s *serveProcess) stop() {
	s.stopOnce.Do(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	})
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
