// Package hubtest holds local implementations of the services dpsd calls
// out to, for unit tests and for end-to-end tests that start the real dpsd
// binary:
//
//   - IoTHub: an HTTPS IoT hub registry (devices and twins, with real state
//     and etags) that checks service tokens as IoT Hub does.
//   - RegistryWebhook: a receiver of dpsd's registry webhook events that
//     checks their signature.
//   - AllocationWebhook: a custom allocation webhook whose answers the test
//     chooses.
//
// Each listens on 127.0.0.1 only, serves TLS with a certificate from a CA
// of its own (or one shared through Options.CA: one --outbound-ca-file for
// all), records every request it receives, and can be told to answer slowly
// (SetDelay) or fail a number of times (FailNext).
package hubtest

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/pki"
)

// CA issues the doubles' server certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte
}

// NewCA makes a CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	c, k, err := pki.NewRootCA(pki.Options{CommonName: "dpsd test doubles CA"})
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: c, Key: k, PEM: pki.EncodePEM(c)}
}

// File writes the CA certificate to a PEM file in a temporary directory,
// for dpsd serve --outbound-ca-file, and returns its path.
func (ca *CA) File(t testing.TB) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "outbound-ca.pem")
	if err := os.WriteFile(name, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// Client returns an outbound client that trusts the CA.
func (ca *CA) Client(t testing.TB, o outbound.Options) *outbound.Client {
	t.Helper()
	o.CAFile = ca.File(t)
	c, err := outbound.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Call is one request a double received, and how it answered.
type Call struct {
	Method string
	Path   string // decoded
	Query  string // raw
	Header http.Header
	Body   []byte
	Status int // 0 when the client went away before the answer
	// Note says why a double refused the request, e.g. "token expired".
	Note string
}

// Options are what every double takes.
type Options struct {
	// CA issues the server certificate; nil for a new CA.
	CA *CA
	// Plain serves plain HTTP instead of HTTPS (webhook doubles only: dpsd
	// allows http:// to loopback addresses).
	Plain bool
}

// Server is the part every double shares: the listener, the record of
// calls, and the knobs.
type Server struct {
	// URL is the base URL, e.g. https://127.0.0.1:40123.
	URL string
	// Addr is the listening address, 127.0.0.1:port.
	Addr string
	// CA issued the server certificate (nil with Plain).
	CA *CA

	srv       *http.Server
	errorBody func(status int) []byte
	closed    chan struct{}

	mu         sync.Mutex
	calls      []*Call
	delay      time.Duration
	failN      int
	failStatus int
}

// handler answers a request; it returns a note for the record when it
// refuses.
type handler func(w http.ResponseWriter, r *http.Request, body []byte) (note string)

func start(t testing.TB, o Options, h handler, errorBody func(int) []byte) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), errorBody: errorBody, closed: make(chan struct{})}
	scheme := "http"
	if !o.Plain {
		if o.CA == nil {
			o.CA = NewCA(t)
		}
		s.CA = o.CA
		leaf, key, err := pki.NewLeaf(pki.Options{CommonName: "localhost", Hosts: pki.ServerHosts(),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, o.CA.Cert, o.CA.Key)
		if err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}},
			MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	s.URL = scheme + "://" + s.Addr
	// Clients that give up mid-handshake are part of the tests; their
	// errors are not worth a log line.
	s.srv = &http.Server{Handler: s.wrap(h), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go s.srv.Serve(ln)
	t.Cleanup(func() {
		close(s.closed)
		s.srv.Close()
	})
	return s
}

// wrap records the call, applies the knobs, and records the answer before
// the client can see it, so a test reading Calls after its call returns
// sees the status.
func (s *Server) wrap(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		c := &Call{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
		s.mu.Lock()
		s.calls = append(s.calls, c)
		delay := s.delay
		fail := 0
		if s.failN > 0 {
			s.failN--
			fail = s.failStatus
		}
		s.mu.Unlock()
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				// A hub that hangs never answers: without this, net/http
				// would send 200 to a client that half-closed.
				panic(http.ErrAbortHandler)
			case <-s.closed:
				t.Stop()
				panic(http.ErrAbortHandler)
			}
		}
		rec := httptest.NewRecorder()
		note := "failed on purpose (FailNext)"
		if fail != 0 {
			rec.Header().Set("Content-Type", "application/json; charset=utf-8")
			rec.WriteHeader(fail)
			rec.Write(s.errorBody(fail))
		} else {
			note = h(rec, r, body)
		}
		s.mu.Lock()
		c.Status, c.Note = rec.Code, note
		s.mu.Unlock()
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
	})
}

// Calls returns copies of the calls received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Call, len(s.calls))
	for i, c := range s.calls {
		out[i] = *c
	}
	return out
}

// ResetCalls forgets the calls received so far.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	s.calls = nil
	s.mu.Unlock()
}

// SetDelay makes every answer wait d (or until the client gives up).
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// FailNext answers the next n requests with status, before any other
// check.
func (s *Server) FailNext(n, status int) {
	s.mu.Lock()
	s.failN, s.failStatus = n, status
	s.mu.Unlock()
}
