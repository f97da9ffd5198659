package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The server's pprof endpoint (dpsd serve --pprof-addr): its allocation
// counters, and profiles of a phase.

var pprofClient = &http.Client{Timeout: 10 * time.Minute}

// memStats returns the server's runtime.MemStats Mallocs and TotalAlloc:
// exact counts of heap allocations since it started, which the text form
// of the heap profile ends with.
func memStats(base string) (mallocs, totalAlloc uint64, ok bool) {
	resp, err := pprofClient.Get(base + "/debug/pprof/heap?debug=1")
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, false
	}
	return parseMemStats(resp.Body)
}

func parseMemStats(r io.Reader) (mallocs, totalAlloc uint64, ok bool) {
	var haveM, haveT bool
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		k, v, found := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !found {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "Mallocs":
			mallocs, haveM = n, true
		case "TotalAlloc":
			totalAlloc, haveT = n, true
		}
	}
	return mallocs, totalAlloc, haveM && haveT
}

type profileResult struct {
	file string
	err  error
}

// fetchProfiles starts the CPU profile and the allocation profile (a delta:
// what was allocated meanwhile) of the next d, and delivers the two files
// written to m.profileDir.
func (m *monitor) fetchProfiles(d time.Duration) chan profileResult {
	out := make(chan profileResult, 2)
	secs := strconv.Itoa(max(1, int(math.Round(d.Seconds()))))
	for _, kind := range []string{"cpu", "allocs"} {
		go func() {
			path := "/debug/pprof/profile?seconds=" + secs
			if kind == "allocs" {
				path = "/debug/pprof/allocs?seconds=" + secs
			}
			file := filepath.Join(m.profileDir, m.label+"-"+kind+".pb.gz")
			out <- profileResult{file, fetch(m.pprof+path, file)}
		}()
	}
	return out
}

func fetch(url, file string) error {
	resp, err := pprofClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
