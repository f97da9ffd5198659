package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// servePprof serves Go's profiling endpoints (/debug/pprof/: CPU, heap,
// allocations, goroutines, traces) on addr, over plain HTTP and without
// authentication: they are for benchmarks (scripts/profile.sh), on a
// loopback address. They are on their own listener and mux, never on the
// device or service API's.
func (s *Server) servePprof(addr string) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s (--pprof-addr): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a profile answers after the seconds it covers.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if ip := net.ParseIP(hostOf(ln.Addr())); ip == nil || !ip.IsLoopback() {
		s.log.Warn("the profiling endpoints are reachable from other machines, without authentication; give --pprof-addr a loopback address (127.0.0.1:6060)", "addr", ln.Addr().String())
	}
	s.log.Info("listening", "listener", "pprof", "addr", ln.Addr().String())
	s.mu.Lock()
	s.pprofAddr = ln.Addr().String()
	s.mu.Unlock()
	go srv.Serve(ln)
	return srv, nil
}

// PprofAddr is the address the profiling endpoints listen on ("" when
// --pprof-addr is not set), once Serve listens.
func (s *Server) PprofAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pprofAddr
}

func hostOf(a net.Addr) string {
	h, _, _ := net.SplitHostPort(a.String())
	return h
}
