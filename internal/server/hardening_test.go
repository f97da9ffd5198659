package server_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestCertificateAndTokenRulesWiring: the device certificate rules and
// the SAS token lifetime of the configuration reach the attestor and the
// service API.
func TestCertificateAndTokenRulesWiring(t *testing.T) {
	srv := servertest.Start(t, server.Config{MinRSABits: 3072, MaxChainLength: 2, MaxSASLifetime: time.Hour})
	in := provtest.Instance{T: t, Store: srv.Store(), Scope: srv.State.IDScope}
	in.LinkHub(provtest.Hub1, 1, true)
	root := in.VerifiedRoot("wiring-root", pki.Options{CommonName: "Wiring Root"})
	in.PutGroup(provtest.CAGroup("grp-wiring", "wiring-root"))
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	inter := root.Intermediate(t, pki.Options{CommonName: "Wiring Intermediate"})
	gpk, _ := provtest.Keys(t, in.PutGroup(provtest.SymGroup("grp-sym")).Attestation)

	leaf, key := root.Leaf(t, pki.Options{CommonName: "dev-rsa2048", Key: rsa2048})
	long, longKey := inter.Leaf(t, pki.Options{CommonName: "dev-long"})
	for _, tc := range []struct {
		name, id string
		cert     *tls.Certificate
		sas      string
		reason   string
	}{
		{"rsa-2048 below --min-rsa-bits 3072", "dev-rsa2048", testutil.TLSCert(key, leaf, root.Cert), "",
			"has a 2048-bit RSA key; dpsd accepts RSA keys of at least 3072 bits"},
		{"three certificates over --max-chain-length 2", "dev-long", testutil.TLSCert(longKey, long, inter.Cert, root.Cert), "",
			"the device presented 3 certificates; at most 2 are accepted"},
		{"device token beyond --max-sas-lifetime", "dev-sym", nil,
			sas.New(sas.DeviceResource(srv.State.IDScope, "dev-sym"), "registration", sas.DeriveDeviceKey(gpk, "dev-sym"), time.Now().Add(2*time.Hour), true),
			"longer than the 1h0m0s this server accepts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := register(t, srv, tc.id, tc.cert, tc.sas)
			if r.status != http.StatusUnauthorized || !strings.Contains(r.body, tc.reason) {
				t.Fatalf("register: %d %s; want 401 with %q", r.status, r.body, tc.reason)
			}
		})
	}

	owner, err := srv.Store().Policy(t.Context(), dps.OwnerPolicyName)
	if err != nil {
		t.Fatal(err)
	}
	ownerKey, _ := sas.DecodeKey(owner.PrimaryKey)
	r := serviceCall(t, srv, http.MethodGet, "/enrollments/x", sas.New(srv.State.ServiceEndpoint, dps.OwnerPolicyName, ownerKey, time.Now().Add(2*time.Hour), true))
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, "longer than the 1h0m0s this server accepts") {
		t.Fatalf("service token valid for 2 h: %d %s", r.status, r.body)
	}
}

type answer struct {
	status int
	header http.Header
	body   string
}

// register sends a register request with a client certificate or a SAS
// token (or neither).
func register(t testing.TB, srv *servertest.Server, id string, cert *tls.Certificate, token string) answer {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: srv.Roots, ServerName: "localhost"},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", srv.DeviceAddr)
		},
	}
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodPut, "https://"+srv.State.DeviceEndpoint+"/"+srv.State.IDScope+"/registrations/"+id+"/register?api-version=2021-06-01",
		strings.NewReader(`{"registrationId":"`+id+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	return roundTrip(t, &http.Client{Transport: tr, Timeout: 20 * time.Second}, req)
}

// serviceCall sends a body-less service API request with the given
// Authorization.
func serviceCall(t testing.TB, srv *servertest.Server, method, path, token string) answer {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+srv.State.ServiceEndpoint+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	return roundTrip(t, srv.HTTPClient(t), req)
}

func roundTrip(t testing.TB, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// eachEngine runs f on a server on SQLite and on one on PostgreSQL (a
// database of its own; skipped without a test server, except in CI).
func eachEngine(t *testing.T, cfg server.Config, f func(t *testing.T, srv *servertest.Server)) {
	t.Run("sqlite", func(t *testing.T) { f(t, servertest.Start(t, cfg)) })
	t.Run("postgres", func(t *testing.T) {
		c := cfg
		c.Store = storetest.PostgresDatabase(t, storetest.PostgresDSN(t))
		f(t, servertest.Start(t, c))
	})
}

// ownerToken is a service token of the owner policy for the advertised
// service endpoint.
func ownerToken(t testing.TB, srv *servertest.Server) string {
	t.Helper()
	p, err := srv.Store().Policy(t.Context(), dps.OwnerPolicyName)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := sas.DecodeKey(p.PrimaryKey)
	return sas.New(srv.State.ServiceEndpoint, dps.OwnerPolicyName, k, time.Now().Add(time.Hour), true)
}

// serviceSend sends a service API request with a JSON body.
func serviceSend(t testing.TB, srv *servertest.Server, method, path, token, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+srv.State.ServiceEndpoint+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", token)
	req.Header.Set("Content-Type", "application/json")
	return roundTrip(t, srv.HTTPClient(t), req)
}

// TestTextRefusedAtTheEdge: JSON text that is not UTF-8 is refused with
// 400 before it reaches the store, on both engines (SQLite stored it raw,
// PostgreSQL answered 500), from the service API and from a device.
func TestTextRefusedAtTheEdge(t *testing.T) {
	eachEngine(t, server.Config{}, func(t *testing.T, srv *servertest.Server) {
		tok := ownerToken(t, srv)
		r := serviceSend(t, srv, http.MethodPut, "/enrollments/utf8-dev", tok,
			"{\"attestation\": {\"type\": \"symmetricKey\"}, \"initialTwin\": {\"tags\": {\"site\": \"M\xfcnchen\"}}}")
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "not UTF-8") {
			t.Fatalf("enrollment with Latin-1 tags: %d %s", r.status, r.body)
		}
		if r := serviceCall(t, srv, http.MethodGet, "/enrollments/utf8-dev", tok); r.status != http.StatusNotFound {
			t.Fatalf("the refused enrollment was stored: %d %s", r.status, r.body)
		}

		in := provtest.Instance{T: t, Store: srv.Store(), Scope: srv.State.IDScope}
		in.LinkHub(provtest.Hub1, 1, true)
		gpk, _ := provtest.Keys(t, in.PutGroup(provtest.SymGroup("grp-utf8")).Attestation)
		devTok := sas.New(sas.DeviceResource(srv.State.IDScope, "utf8-dev-2"), "registration", sas.DeriveDeviceKey(gpk, "utf8-dev-2"), time.Now().Add(time.Hour), true)
		req, _ := http.NewRequest(http.MethodPut, "https://"+srv.State.DeviceEndpoint+"/"+srv.State.IDScope+"/registrations/utf8-dev-2/register",
			strings.NewReader("{\"registrationId\": \"utf8-dev-2\", \"payload\": {\"site\": \"M\xfcnchen\"}}"))
		req.Header.Set("Authorization", devTok)
		req.Header.Set("Content-Type", "application/json")
		if r := roundTrip(t, srv.HTTPClient(t), req); r.status != http.StatusBadRequest || !strings.Contains(r.body, "not UTF-8") {
			t.Fatalf("register with a Latin-1 payload: %d %s", r.status, r.body)
		}
		if _, err := srv.Store().Registration(t.Context(), "utf8-dev-2"); err == nil {
			t.Fatal("the refused registration wrote a record")
		}
	})
}

// TestServiceTokenAudience: a service token must name one of the
// instance's host names (a --hostname, or a name of its server
// certificate); the Host header a client sends plays no part, and the
// Location of a register answer is built from the configuration.
func TestServiceTokenAudience(t *testing.T) {
	srv := servertest.Start(t, server.Config{HostNames: []string{"dps.factory.example"}})
	owner, err := srv.Store().Policy(t.Context(), dps.OwnerPolicyName)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sas.DecodeKey(owner.PrimaryKey)
	_, port, _ := net.SplitHostPort(srv.ServiceAddr)
	for _, tc := range []struct {
		sr, host string
		status   int
	}{
		{"dps.factory.example", "", http.StatusOK},
		{"dps.factory.example:" + port, "", http.StatusOK},
		{"localhost:" + port, "", http.StatusOK},
		{"127.0.0.1", "", http.StatusOK},
		{"evil.example", "evil.example", http.StatusUnauthorized},
		{"evil.example:" + port, "evil.example:" + port, http.StatusUnauthorized},
		{"other.example", "", http.StatusUnauthorized},
	} {
		t.Run(tc.sr, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "https://"+srv.State.ServiceEndpoint+"/settings", nil)
			req.Header.Set("Authorization", sas.New(tc.sr, dps.OwnerPolicyName, key, time.Now().Add(time.Hour), true))
			if tc.host != "" {
				req.Host = tc.host
			}
			r := roundTrip(t, srv.HTTPClient(t), req)
			if r.status != tc.status {
				t.Fatalf("token for %s with Host %q: %d %s, want %d", tc.sr, req.Host, r.status, r.body, tc.status)
			}
			if tc.status == http.StatusUnauthorized && !strings.Contains(r.body, "is not a host name of this dpsd instance") {
				t.Fatalf("refusal says %s", r.body)
			}
		})
	}

	in := provtest.Instance{T: t, Store: srv.Store(), Scope: srv.State.IDScope}
	in.LinkHub(provtest.Hub1, 1, true)
	gpk, _ := provtest.Keys(t, in.PutGroup(provtest.SymGroup("grp-loc")).Attestation)
	req, _ := http.NewRequest(http.MethodPut, "https://"+srv.State.DeviceEndpoint+"/"+srv.State.IDScope+"/registrations/loc-dev/register", strings.NewReader(`{}`))
	req.Header.Set("Authorization", sas.New(sas.DeviceResource(srv.State.IDScope, "loc-dev"), "registration", sas.DeriveDeviceKey(gpk, "loc-dev"), time.Now().Add(time.Hour), true))
	req.Host = "evil.example"
	r := roundTrip(t, srv.HTTPClient(t), req)
	want := "https://dps.factory.example:" + port + "/" + srv.State.IDScope + "/registrations/loc-dev/register"
	if r.status != http.StatusAccepted || r.header.Get("Location") != want {
		t.Fatalf("register with Host evil.example: %d, Location %q; want 202 and %q", r.status, r.header.Get("Location"), want)
	}
}

// TestMetricsListeners: /metrics is served on the listener of the service
// API, or on --metrics-addr alone, and never on a listener that serves
// devices only.
func TestMetricsListeners(t *testing.T) {
	get := func(t *testing.T, c *http.Client, url string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		r := roundTrip(t, c, req)
		if r.status == http.StatusOK && strings.HasSuffix(url, "/metrics") && !strings.Contains(r.body, "go_goroutines") {
			t.Fatalf("GET %s: 200 without the metrics", url)
		}
		return r.status
	}
	t.Run("one listener serves them", func(t *testing.T) {
		srv := servertest.Start(t, server.Config{})
		if got := get(t, srv.HTTPClient(t), "https://"+srv.State.DeviceEndpoint+"/metrics"); got != http.StatusOK {
			t.Fatalf("/metrics on the only listener: %d", got)
		}
	})
	t.Run("the service listener, not the device listener", func(t *testing.T) {
		srv := servertest.Start(t, server.Config{ServiceAddr: "127.0.0.1:0"})
		c := srv.HTTPClient(t)
		if got := get(t, c, "https://"+srv.State.DeviceEndpoint+"/metrics"); got != http.StatusNotFound {
			t.Fatalf("/metrics on the device listener: %d, want 404", got)
		}
		if got := get(t, c, "https://"+srv.State.ServiceEndpoint+"/metrics"); got != http.StatusOK {
			t.Fatalf("/metrics on the service listener: %d", got)
		}
	})
	t.Run("--metrics-addr alone", func(t *testing.T) {
		srv := servertest.Start(t, server.Config{ServiceAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"})
		c := srv.HTTPClient(t)
		for _, ep := range []string{srv.State.DeviceEndpoint, srv.State.ServiceEndpoint} {
			if got := get(t, c, "https://"+ep+"/metrics"); got != http.StatusNotFound {
				t.Fatalf("/metrics on %s: %d, want 404", ep, got)
			}
		}
		plain := &http.Client{Timeout: 10 * time.Second}
		for _, p := range []string{"/metrics", "/healthz"} {
			if got := get(t, plain, "http://"+srv.State.MetricsEndpoint+p); got != http.StatusOK {
				t.Fatalf("%s on --metrics-addr: %d", p, got)
			}
		}
	})
}

// tlsDial opens a TCP connection from the loopback address from to addr
// and completes a TLS handshake over it: it succeeds only on a connection
// the server accepted (one over a cap is closed before the handshake).
func tlsDial(t *testing.T, srv *servertest.Server, from, addr string) (*tls.Conn, error) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{RootCAs: srv.Roots, ServerName: "localhost"})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// TestConnectionCaps opens many connections to the HTTPS and the MQTT
// listener of a real server: each keeps its cap per source address and in
// all, and a connection closed gives its place back.
func TestConnectionCaps(t *testing.T) {
	const perIP, max = 5, 8
	srv := servertest.Start(t, server.Config{MQTTAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		MaxConns: max, MaxConnsPerIP: perIP, HandshakeTimeout: time.Minute})
	for _, l := range []struct{ name, addr string }{{"https", srv.DeviceAddr}, {"mqtt", srv.MQTTAddr}} {
		t.Run(l.name, func(t *testing.T) {
			var held []*tls.Conn
			open := func(from string, n int) (accepted int) {
				for range n {
					c, err := tlsDial(t, srv, from, l.addr)
					if err == nil {
						held = append(held, c)
						accepted++
					}
				}
				return accepted
			}
			if n := open("127.0.0.1", 3*perIP); n != perIP {
				t.Fatalf("%d of %d connections from one address accepted, want %d", n, 3*perIP, perIP)
			}
			if n := open("127.0.0.2", 2*perIP); n != max-perIP {
				t.Fatalf("%d connections from a second address accepted, want the %d left under the cap of %d", n, max-perIP, max)
			}
			if n := open("127.0.0.3", 3); n != 0 {
				t.Fatalf("%d connections accepted over the listener's cap", n)
			}
			// A closed connection gives its place back once the server
			// has seen it close.
			held[0].Close()
			for deadline := time.Now().Add(10 * time.Second); open("127.0.0.3", 1) != 1; {
				if time.Now().After(deadline) {
					t.Fatal("a place freed by a closed connection was not given back within 10 s")
				}
				time.Sleep(50 * time.Millisecond)
			}
			for _, c := range held {
				c.Close()
			}
		})
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+srv.State.MetricsEndpoint+"/metrics", nil)
	m := roundTrip(t, &http.Client{Timeout: 10 * time.Second}, req).body
	for _, want := range []string{
		`dpsd_connections_refused_total{listener="https",reason="source"} 10`,
		`dpsd_connections_refused_total{listener="https",reason="listener"}`,
		`dpsd_connections_refused_total{listener="mqtt",reason="source"} 10`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if srv.Logs.Count("connection refused: the source address holds its most connections") == 0 {
		t.Error("the refusals were not logged")
	}
}

// TestConnectionTimeouts: a connection that never completes its TLS
// handshake, one that completes it and sends no request, and an MQTT
// connection that connects and then only pings (or asks for no keep-alive)
// are all closed by the server.
func TestConnectionTimeouts(t *testing.T) {
	srv := servertest.Start(t, server.Config{MQTTAddr: "127.0.0.1:0", HandshakeTimeout: 300 * time.Millisecond, MQTTIdleTimeout: 500 * time.Millisecond})
	closedWithin := func(t *testing.T, c net.Conn, what string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s: still open after 10 s", what)
			}
		}
	}
	for _, addr := range []string{srv.DeviceAddr, srv.MQTTAddr} {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		closedWithin(t, raw, addr+": no TLS handshake")
		c, err := tlsDial(t, srv, "127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		closedWithin(t, c, addr+": TLS handshake and nothing else")
	}
	for _, keepAlive := range []uint16{0, 60} {
		c, err := tlsDial(t, srv, "127.0.0.1", srv.MQTTAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write((&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, KeepAlive: keepAlive, ClientID: "dev",
			UsernameFlag: true, Username: srv.State.IDScope + "/registrations/dev/api-version=2019-03-31"}).Encode(nil))
		closedWithin(t, c, fmt.Sprintf("MQTT connection with keep-alive %d and no request", keepAlive))
	}
	// The server logs a connection after closing it.
	for deadline := time.Now().Add(10 * time.Second); srv.Logs.Count("no register or operation-status request within 500ms") != 2; {
		if time.Now().After(deadline) {
			t.Fatal("the two idle MQTT connections were not logged as such")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
