// Package servertest runs dpsd in-process for tests: server.New and Serve,
// the wiring of `dpsd serve`, listening on 127.0.0.1. Every suite that needs
// a whole server starts it here, so that starting, waiting until it listens,
// stopping it and printing its log when a test failed are written once.
// Only tests import it.
package servertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/testutil"
)

// How long a server may take to start listening and to stop.
const (
	startTimeout = 15 * time.Second
	stopTimeout  = 20 * time.Second
)

// Server is a running server.
type Server struct {
	*server.Server
	// State is what server.json says: the ID scope and the endpoints, with
	// the advertised host name (localhost).
	State server.State
	// DeviceAddr, ServiceAddr and MQTTAddr are the listeners on 127.0.0.1
	// (MQTTAddr is empty without an MQTT listener).
	DeviceAddr, ServiceAddr, MQTTAddr string
	// Roots trusts the server certificate.
	Roots *x509.CertPool
	// Logs is the server's log (Start only).
	Logs *testutil.LogBuffer

	cancel context.CancelFunc
	done   chan error
}

// Run starts a server on cfg and returns once it listens. The caller stops
// it with Stop.
func Run(cfg server.Config, log *slog.Logger) (*Server, error) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("server.New: %w", err)
	}
	s := &Server{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx) }()
	// State is set once every listener is open and server.json is written.
	deadline := time.Now().Add(startTimeout)
	for s.State = srv.State(); s.State.ServiceEndpoint == ""; s.State = srv.State() {
		select {
		case err := <-s.done:
			cancel()
			return nil, fmt.Errorf("the server stopped before listening: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			return nil, fmt.Errorf("the server did not listen within %s", startTimeout)
		}
	}
	s.DeviceAddr, s.ServiceAddr, s.MQTTAddr = loopback(s.State.DeviceEndpoint), loopback(s.State.ServiceEndpoint), loopback(s.State.MQTTEndpoint)
	s.Roots = x509.NewCertPool()
	s.Roots.AppendCertsFromPEM(srv.Instance().ServerCACertPEM)
	return s, nil
}

// loopback is 127.0.0.1 with the port of endpoint ("" for none): the server
// advertises localhost but listens on 127.0.0.1 only, and localhost may
// resolve to ::1.
func loopback(endpoint string) string {
	_, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// Stop shuts the server down and returns what Serve returned, or an error
// when it does not return within 20 s.
func (s *Server) Stop() error {
	s.cancel()
	select {
	case err := <-s.done:
		return err
	case <-time.After(stopTimeout):
		return errors.New("the server did not stop within " + stopTimeout.String())
	}
}

// Start runs a server for t: data in t.TempDir() and the HTTPS listener on a
// free port of 127.0.0.1 unless cfg says otherwise, and a debug log that is
// printed if t fails. The server stops when t ends, and t fails unless it
// stops cleanly.
func Start(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.HTTPSAddr == "" {
		cfg.HTTPSAddr = "127.0.0.1:0"
	}
	log, logs := testutil.NewLogger(t, slog.LevelDebug)
	s, err := Run(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s.Logs = logs
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
	})
	return s
}

// HTTPClient trusts the server and dials 127.0.0.1 whatever host a URL
// names, so that https://localhost:PORT (the advertised endpoint, as the
// server certificate and SAS tokens name it) reaches the server.
func (s *Server) HTTPClient(t testing.TB) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.Roots},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", loopback(addr))
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
