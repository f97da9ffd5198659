package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
)

// TestPprof: --pprof-addr serves the profiling endpoints on their own
// listener, and only there; without it there is none.
func TestPprof(t *testing.T) {
	get := func(t *testing.T, hc *http.Client, url string) (int, string) {
		t.Helper()
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s := servertest.Start(t, server.Config{PprofAddr: "127.0.0.1:0"})
	addr := s.PprofAddr()
	if addr == "" {
		t.Fatal("PprofAddr is empty with --pprof-addr set")
	}
	if code, body := get(t, http.DefaultClient, "http://"+addr+"/debug/pprof/heap?debug=1"); code != http.StatusOK || !strings.Contains(body, "# Mallocs = ") {
		t.Errorf("GET /debug/pprof/heap?debug=1: %d %.200s", code, body)
	}
	if code, _ := get(t, s.HTTPClient(t), "https://"+s.DeviceAddr+"/debug/pprof/heap?debug=1"); code != http.StatusNotFound {
		t.Errorf("the HTTPS listener answers /debug/pprof/heap with %d, want 404", code)
	}
	if s.Logs.Count(`listener=pprof`) != 1 || s.Logs.Count("reachable from other machines") != 0 {
		t.Errorf("log:\n%s", s.Logs)
	}

	if addr := servertest.Start(t, server.Config{}).PprofAddr(); addr != "" {
		t.Errorf("PprofAddr = %q without --pprof-addr", addr)
	}
}
