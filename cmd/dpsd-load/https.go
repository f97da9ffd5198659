package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/dpsd/dpsd/client"
)

// httpsTarget registers with the Go device client (package client), and
// measures its baseline with the same net/http stack: GET /healthz, a
// trivial answer.
type httpsTarget struct {
	endpoint, host, idScope string
	roots                   *x509.CertPool
	fleet                   *fleet
	keepAlive               bool
}

func (t *httpsTarget) operations() (string, string) {
	switch {
	case !t.keepAlive:
		return "new TLS connection + GET /healthz", "new TLS connection + register"
	case t.perConnection():
		return "GET /healthz, kept-alive connection", "re-register, kept-alive connection (one device each)"
	}
	return "GET /healthz, kept-alive connection", "register, kept-alive connection"
}

// perConnection reports whether each connection carries one device: X.509
// devices authenticate in the TLS handshake.
func (t *httpsTarget) perConnection() bool { return t.keepAlive && t.fleet.at(0).cert != nil }

func (t *httpsTarget) distinct(p plan) int {
	if t.perConnection() {
		return p.concurrency
	}
	return t.fleet.distinct(p)
}

func (t *httpsTarget) tlsConfig(d device) *tls.Config {
	tc := &tls.Config{RootCAs: t.roots, ServerName: t.host}
	if d.cert != nil {
		tc.Certificates = []tls.Certificate{*d.cert}
	}
	return tc
}

func (t *httpsTarget) open(ctx context.Context, w int, timeout time.Duration) (conn, error) {
	if !t.keepAlive {
		return &httpsNew{t: t, timeout: timeout}, nil
	}
	c := &httpsKept{t: t, timeout: timeout}
	if t.perConnection() {
		d := t.fleet.device(w)
		c.dev = &d
	}
	// One connection per worker, opened now: the phases measure requests
	// on it, not its handshake.
	c.tr = &http.Transport{TLSClientConfig: t.tlsConfig(t.fleet.device(w)), MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Hour}
	if c.dev != nil {
		// The device's first registration: the workload then measures
		// re-registrations, a device re-provisioning.
		if err := c.register(ctx, w); err != nil {
			return nil, fmt.Errorf("registering device %s first: %w", c.dev.id, err)
		}
	} else if err := c.baseline(ctx, w); err != nil {
		return nil, err
	}
	return c, nil
}

// httpsNew opens a fresh TLS connection per operation, as a fleet of
// first-boot devices does.
type httpsNew struct {
	t       *httpsTarget
	timeout time.Duration
}

func (c *httpsNew) transport(i int) (*http.Transport, device) {
	d := c.t.fleet.device(i)
	return &http.Transport{TLSClientConfig: c.t.tlsConfig(d), DisableKeepAlives: true}, d
}

func (c *httpsNew) baseline(ctx context.Context, i int) error {
	tr, _ := c.transport(i)
	defer tr.CloseIdleConnections()
	return healthz(ctx, tr, c.t.endpoint, c.timeout)
}

func (c *httpsNew) register(ctx context.Context, i int) error {
	tr, d := c.transport(i)
	defer tr.CloseIdleConnections()
	return registerHTTPS(ctx, c.t, d, tr, c.timeout)
}

func (c *httpsNew) close() {}

// httpsKept sends every request of a worker on one connection.
type httpsKept struct {
	t       *httpsTarget
	tr      *http.Transport
	dev     *device // the connection's device, when it carries one
	timeout time.Duration
}

func (c *httpsKept) baseline(ctx context.Context, _ int) error {
	return healthz(ctx, c.tr, c.t.endpoint, c.timeout)
}

func (c *httpsKept) register(ctx context.Context, i int) error {
	d := c.dev
	if d == nil {
		dd := c.t.fleet.device(i)
		d = &dd
	}
	return registerHTTPS(ctx, c.t, *d, c.tr, c.timeout)
}

func (c *httpsKept) close() { c.tr.CloseIdleConnections() }

func healthz(ctx context.Context, tr http.RoundTripper, endpoint string, timeout time.Duration) error {
	hc := &http.Client{Transport: tr, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+endpoint+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return &transportError{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return &transportError{err}
	}
	if resp.StatusCode != http.StatusOK {
		e := &client.Error{StatusCode: resp.StatusCode}
		_ = json.Unmarshal(b, e)
		return e
	}
	return nil
}

// registerHTTPS registers d with client.Register over tr. The client would
// retry throttling, server errors and network failures until its context
// ends; a benchmark must see them instead, so the first such answer ends the
// registration with that error.
func registerHTTPS(ctx context.Context, t *httpsTarget, d device, tr http.RoundTripper, timeout time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cfg := client.Config{Endpoint: t.endpoint, IDScope: t.idScope, RegistrationID: d.id, RootCAs: t.roots,
		Certificate: d.cert, SymmetricKey: d.key, UserAgent: "dpsd-load",
		HTTPClient: &http.Client{Transport: &failFast{rt: tr, cancel: cancel}, Timeout: timeout}}
	_, err := client.Register(ctx, cfg)
	if cause := context.Cause(ctx); err != nil && cause != nil && cause != context.Canceled {
		return cause
	}
	return err
}

// failFast ends a registration at the first answer the client would retry.
type failFast struct {
	rt     http.RoundTripper
	cancel context.CancelCauseFunc
}

func (f *failFast) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.rt.RoundTrip(req)
	if err != nil {
		f.cancel(&transportError{err})
		return nil, err
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		e := &client.Error{StatusCode: resp.StatusCode}
		_ = json.Unmarshal(b, e)
		f.cancel(e)
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, nil
}

// transportError is a failure to exchange a request: no answer, or a
// connection that broke.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// hostOf is the host of host:port.
func hostOf(endpoint string) string {
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		return h
	}
	return endpoint
}
