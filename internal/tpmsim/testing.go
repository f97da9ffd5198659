package tpmsim

import (
	"errors"
	"os"
	"testing"
)

// Open starts a simulator for t and closes it when t ends. Built without
// cgo it fails the test under CI (CI set), where the simulator must run,
// and skips it elsewhere.
func Open(t testing.TB) *Simulator {
	t.Helper()
	s, err := Start()
	if errors.Is(err, ErrNoCgo) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Serve serves s on 127.0.0.1 (a free pair of ports) until t ends and
// returns the command port's address.
func Serve(t testing.TB, s *Simulator) string {
	t.Helper()
	srv, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr()
}

// OpenProvisioned is Open with the endorsement key and the storage root key
// created (Provision); it returns their public areas.
func OpenProvisioned(t testing.TB) (s *Simulator, ek, srk []byte) {
	t.Helper()
	s = Open(t)
	ek, srk, err := s.Provision()
	if err != nil {
		t.Fatal(err)
	}
	return s, ek, srk
}
