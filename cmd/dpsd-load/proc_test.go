package main

import (
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestProc reads this process's usage and finds it from its listener.
func TestProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	s, err := readProc(os.Getpid())
	if err != nil || s.rssKB <= 0 || s.hwmKB < s.rssKB || s.cpu < 0 {
		t.Errorf("readProc: %+v, %v", s, err)
	}
	if _, err := readProc(-1); err == nil {
		t.Error("readProc of no process succeeded")
	}
	if tk := clockTicks(); tk <= 0 {
		t.Errorf("clockTicks = %d", tk)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	for _, endpoint := range []string{addr, strings.Replace(addr, "127.0.0.1", "localhost", 1)} {
		if pid, err := listenerPID(endpoint); pid != os.Getpid() {
			t.Errorf("listenerPID(%s) = %d, %v; want %d", endpoint, pid, err, os.Getpid())
		}
	}
	ln.Close()
	if pid, err := listenerPID(addr); err == nil || !strings.Contains(err.Error(), "no process of this machine listens on port") {
		t.Errorf("listenerPID of a closed port: %d, %v", pid, err)
	}
	if pid, err := listenerPID("192.0.2.1:8443"); err == nil || !strings.Contains(err.Error(), "is not this machine") {
		t.Errorf("listenerPID of another machine: %d, %v", pid, err)
	}
}

// TestParseMemStats reads the counters at the end of the heap profile's
// text form.
func TestParseMemStats(t *testing.T) {
	for _, tc := range []struct {
		text            string
		mallocs, totals uint64
		ok              bool
	}{
		{"heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 10\n# TotalAlloc = 123456\n# Mallocs = 789\n# Frees = 5\n", 789, 123456, true},
		{"# TotalAlloc = 1\n", 0, 1, false},
		{"not a profile", 0, 0, false},
	} {
		m, b, ok := parseMemStats(strings.NewReader(tc.text))
		if m != tc.mallocs || b != tc.totals || ok != tc.ok {
			t.Errorf("%q: %d, %d, %v; want %d, %d, %v", tc.text, m, b, ok, tc.mallocs, tc.totals, tc.ok)
		}
	}
}
