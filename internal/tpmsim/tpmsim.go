// Package tpmsim runs Microsoft's reference TPM 2.0 (as embedded by
// github.com/google/go-tpm-tools/simulator) for tests: in-process, as a
// go-tpm transport, and on the Microsoft TPM simulator's TCP protocol, which
// the official Azure Node TPM client (tss.js in simulator mode) and the Go
// client (client/tpm with a host:port) speak.
//
// The reference TPM is C code built with cgo (gcc and libssl-dev); the dpsd
// binary never links this package. One simulator exists per process: Start
// blocks while another is running. Its state (keys, persistent handles) is
// in memory and lives until Close.
package tpmsim

import (
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/dpsd/dpsd/client/tpm"
)

// ErrNoCgo is returned by Start when the package was built without cgo.
var ErrNoCgo = errors.New("the TPM simulator needs cgo (gcc and libssl-dev; CGO_ENABLED=1)")

// Simulator is a running reference TPM. It implements go-tpm's
// transport.TPM; commands from any goroutine or connection run one at a time.
type Simulator struct {
	mu     sync.Mutex
	sim    *simulator.Simulator
	closed bool
}

// Start powers on a freshly manufactured TPM (new seeds, so a new EK).
func Start() (*Simulator, error) {
	if !cgoEnabled {
		return nil, ErrNoCgo
	}
	sim, err := simulator.Get()
	if err != nil {
		return nil, fmt.Errorf("starting the TPM simulator: %w", err)
	}
	return &Simulator{sim: sim}, nil
}

// Send runs one TPM command and returns the TPM's response.
func (s *Simulator) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the TPM simulator is closed")
	}
	if len(cmd) < 10 {
		return nil, fmt.Errorf("a TPM command is at least 10 bytes, got %d", len(cmd))
	}
	if _, err := s.sim.Write(cmd); err != nil {
		return nil, err
	}
	resp := make([]byte, 1<<16)
	n, err := s.sim.Read(resp)
	if err != nil {
		return nil, err
	}
	return resp[:n], nil
}

// Close shuts the TPM down and lets another Start proceed.
func (s *Simulator) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.sim.Close()
}

// Provision creates the EK (0x81010001) and SRK (0x81000001) with the
// templates of the Azure device clients, as a TPM provisioned for Azure
// has them, and returns their public areas (TPM2B_PUBLIC).
func (s *Simulator) Provision() (ek, srk []byte, err error) {
	d := tpm.New(s)
	if ek, err = d.EndorsementKey(); err != nil {
		return nil, nil, err
	}
	if srk, err = d.StorageRootKey(); err != nil {
		return nil, nil, err
	}
	return ek, srk, nil
}
