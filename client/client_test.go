package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

const (
	scope = "0ne00111111"
	regID = "client-dev-01"
)

var deviceKey = []byte("0123456789abcdef0123456789abcdef")

// reply is one scripted answer of the fake service.
type reply struct {
	status     int
	retryAfter string
	body       string
	hangUp     bool // close the connection without answering
}

// seen is a request the fake service received.
type seen struct {
	at     time.Time
	method string
	path   string
	query  string
	header http.Header
	body   string
	certs  int
}

// fake is a DPS that answers from a script (the last reply repeats).
type fake struct {
	mu      sync.Mutex
	script  []reply
	seen    []seen
	srv     *httptest.Server
	roots   *x509.CertPool
	Address string
	conns   atomic.Int32 // connections accepted, handshakes that failed included
}

func newFake(t *testing.T, script ...reply) *fake {
	t.Helper()
	f := &fake{script: script}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	f.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.conns.Add(1)
		}
	}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.roots = x509.NewCertPool()
	f.roots.AddCert(f.srv.Certificate())
	f.Address = f.srv.Listener.Addr().String()
	return f
}

func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	s := seen{at: time.Now(), method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery, header: r.Header.Clone(), body: string(b)}
	if r.TLS != nil {
		s.certs = len(r.TLS.PeerCertificates)
	}
	f.seen = append(f.seen, s)
	rep := f.script[min(len(f.seen), len(f.script))-1]
	f.mu.Unlock()
	if rep.hangUp {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if rep.retryAfter != "" {
		w.Header().Set("Retry-After", rep.retryAfter)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body)
}

func (f *fake) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.seen...)
}

func (f *fake) config() client.Config {
	return client.Config{Endpoint: f.Address, IDScope: scope, RegistrationID: regID, SymmetricKey: deviceKey, RootCAs: f.roots}
}

const (
	assigned  = `{"operationId":"5.0123456789abcdef.op-1","status":"assigned","registrationState":{"registrationId":"client-dev-01","createdDateTimeUtc":"2026-01-02T03:04:05.0000000Z","assignedHub":"hub-1.azure-devices.net","deviceId":"client-dev-01","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2026-01-02T03:04:05.0000000Z","etag":"ImZvbyI=","symmetricKey":{"enrollmentGroupId":"grp"}}}`
	assigning = `{"operationId":"5.0123456789abcdef.op-1","status":"assigning"}`
	failed    = `{"operationId":"5.0123456789abcdef.op-1","status":"failed","registrationState":{"registrationId":"client-dev-01","status":"failed","errorCode":401001,"errorMessage":"IoTHub not found. No IoT hub is linked to this instance."}}`
	disabled  = `{"operationId":"5.0123456789abcdef.op-1","status":"disabled","registrationState":{"registrationId":"client-dev-01","status":"disabled","errorCode":401002,"errorMessage":"enrollment group \"grp\" is disabled"}}`
	refused   = `{"errorCode":401002,"trackingId":"8ad0463c-6427-4479-9dfa-3e8bb7003e9b","message":"the SAS token expired at 2026-01-01T00:00:00Z","timestampUtc":"2026-01-02T03:04:05.0000000Z"}`
	throttled = `{"errorCode":429001,"trackingId":"t-429","message":"throttled"}`
	outage    = `{"errorCode":503001,"trackingId":"t-503","message":"service temporarily unavailable; retry later"}`
)

func register(t *testing.T, cfg client.Config, timeout time.Duration) (*client.RegistrationState, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	st, err := client.Register(ctx, cfg)
	return st, time.Since(start), err
}

func gap(r []seen, i int) time.Duration { return r[i].at.Sub(r[i-1].at) }

func TestRegisterAssignedAtOnce(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 202, body: assigned})
	cfg := f.config()
	cfg.Payload = json.RawMessage(`{"model":"x1"}`)
	cfg.UserAgent = "dpsd-test/1.0"
	st, _, err := register(t, cfg, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "assigned" || st.AssignedHub != "hub-1.azure-devices.net" || st.DeviceID != regID || st.Substatus != "initialAssignment" ||
		st.Etag != "ImZvbyI=" || st.CreatedDateTimeUTC != "2026-01-02T03:04:05.0000000Z" || st.SymmetricKey == nil || st.SymmetricKey.EnrollmentGroupID != "grp" {
		t.Errorf("state = %+v", st)
	}
	r := f.requests()
	if len(r) != 1 {
		t.Fatalf("%d requests, want 1", len(r))
	}
	if r[0].method != "PUT" || r[0].path != "/"+scope+"/registrations/"+regID+"/register" || r[0].query != "api-version=2019-03-31" {
		t.Errorf("request %s %s?%s", r[0].method, r[0].path, r[0].query)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r[0].body), &body); err != nil || string(body["registrationId"]) != `"`+regID+`"` || string(body["payload"]) != `{"model":"x1"}` {
		t.Errorf("body %s", r[0].body)
	}
	if ct := r[0].header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if ua := r[0].header.Get("User-Agent"); ua != "dpsd-test/1.0" {
		t.Errorf("User-Agent %q", ua)
	}
	checkToken(t, r[0].header.Get("Authorization"))
}

// checkToken verifies a device SAS token with the server's parser.
func checkToken(t *testing.T, tok string) {
	t.Helper()
	p, err := sas.Parse(tok)
	if err != nil {
		t.Fatalf("Authorization %q: %v", tok, err)
	}
	if !p.Verify(deviceKey) || !p.MatchesDevice(scope, regID) || p.KeyName != "registration" {
		t.Errorf("token %q does not verify for %s/%s", tok, scope, regID)
	}
	if d := time.Until(p.Expiry); d < 50*time.Minute || d > 61*time.Minute {
		t.Errorf("token expires in %s, want about an hour", d)
	}
}

func TestRegisterHonoursRetryAfterOn429(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 429, retryAfter: "2", body: throttled}, reply{status: 202, body: assigned})
	st, _, err := register(t, f.config(), 10*time.Second)
	if err != nil || st.Status != "assigned" {
		t.Fatalf("Register = %+v, %v", st, err)
	}
	r := f.requests()
	if len(r) != 2 || r[1].method != "PUT" {
		t.Fatalf("%d requests, want the register twice", len(r))
	}
	// The backoff alone would wait 1 to 1.5 s: 2 s means Retry-After.
	if g := gap(r, 1); g < 2*time.Second || g > 3*time.Second {
		t.Errorf("retried after %s, want the 2 s of Retry-After", g)
	}
}

func TestRegisterBacksOffOn503(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 503, body: outage}, reply{status: 500, body: `{}`}, reply{status: 202, body: assigned})
	st, _, err := register(t, f.config(), 15*time.Second)
	if err != nil || st.Status != "assigned" {
		t.Fatalf("Register = %+v, %v", st, err)
	}
	r := f.requests()
	if len(r) != 3 {
		t.Fatalf("%d requests, want 3", len(r))
	}
	if g := gap(r, 1); g < time.Second || g > 1900*time.Millisecond {
		t.Errorf("first retry after %s, want 1 to 1.5 s", g)
	}
	if g := gap(r, 2); g < 2*time.Second || g > 3400*time.Millisecond {
		t.Errorf("second retry after %s, want 2 to 3 s (doubled backoff)", g)
	}
}

func TestRegisterRetriesAHungUpConnection(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{hangUp: true}, reply{status: 202, body: assigned})
	st, _, err := register(t, f.config(), 10*time.Second)
	if err != nil || st.Status != "assigned" {
		t.Fatalf("Register = %+v, %v; a dropped connection is a network error to retry", st, err)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

func TestRegisterPollsUntilAssigned(t *testing.T) {
	t.Parallel()
	f := newFake(t,
		reply{status: 202, retryAfter: "1", body: assigning},
		reply{status: 202, retryAfter: "1", body: `{"operationId":"5.0123456789abcdef.op-1","status":"assigning","registrationState":{"registrationId":"client-dev-01","status":"assigning"}}`},
		reply{status: 200, body: assigned})
	st, _, err := register(t, f.config(), 10*time.Second)
	if err != nil || st.Status != "assigned" || st.AssignedHub != "hub-1.azure-devices.net" {
		t.Fatalf("Register = %+v, %v", st, err)
	}
	r := f.requests()
	if len(r) != 3 {
		t.Fatalf("%d requests, want register and two polls", len(r))
	}
	for i := 1; i < 3; i++ {
		if r[i].method != "GET" || r[i].path != "/"+scope+"/registrations/"+regID+"/operations/5.0123456789abcdef.op-1" || r[i].query != "api-version=2019-03-31" {
			t.Errorf("poll %d: %s %s?%s", i, r[i].method, r[i].path, r[i].query)
		}
		checkToken(t, r[i].header.Get("Authorization"))
		if g := gap(r, i); g < time.Second {
			t.Errorf("poll %d after %s, want the 1 s of Retry-After", i, g)
		}
	}
}

func TestRegisterTerminalFailures(t *testing.T) {
	tests := map[string]struct {
		script []reply
		status string
		code   int
		text   string
	}{
		"failed-at-once":         {[]reply{{status: 202, body: failed}}, "failed", 401001, "IoTHub not found."},
		"failed-after-polling":   {[]reply{{status: 202, retryAfter: "1", body: assigning}, {status: 200, body: failed}}, "failed", 401001, "IoTHub not found."},
		"disabled":               {[]reply{{status: 202, body: disabled}}, "disabled", 401002, "is disabled"},
		"disabled-after-polling": {[]reply{{status: 202, retryAfter: "1", body: assigning}, {status: 200, body: disabled}}, "disabled", 401002, "is disabled"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, tc.script...)
			st, _, err := register(t, f.config(), 10*time.Second)
			var se *client.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Register = %+v, %v; want a *client.StatusError", st, err)
			}
			if st == nil || st != se.State || st.Status != tc.status || st.ErrorCode != tc.code {
				t.Errorf("state %+v, error state %+v", st, se.State)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.text) || !strings.Contains(msg, regID) || !strings.Contains(msg, tc.status) {
				t.Errorf("error text %q", msg)
			}
			var ce *client.Error
			if errors.As(err, &ce) {
				t.Errorf("a terminal status is not an HTTP refusal: %v", ce)
			}
		})
	}
}

func TestRegisterRefusalIsNotRetried(t *testing.T) {
	for _, status := range []int{400, 401, 404, 409} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			f := newFake(t, reply{status: status, body: refused}, reply{status: 202, body: assigned})
			st, _, err := register(t, f.config(), 10*time.Second)
			var ce *client.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Register = %+v, %v; want a *client.Error", st, err)
			}
			if ce.StatusCode != status || ce.ErrorCode != 401002 || ce.TrackingID != "8ad0463c-6427-4479-9dfa-3e8bb7003e9b" ||
				ce.Message != "the SAS token expired at 2026-01-01T00:00:00Z" || ce.Temporary() {
				t.Errorf("error = %+v (temporary %v)", ce, ce.Temporary())
			}
			if !strings.Contains(err.Error(), "8ad0463c") || !strings.Contains(err.Error(), "401002") {
				t.Errorf("error text %q lacks the trackingId or errorCode", err)
			}
			// The script's second answer is "assigned": a retry would have
			// ended in success, not in this refusal.
			if n := len(f.requests()); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestRegisterStopsAtTheContextDeadline(t *testing.T) {
	tests := map[string][]reply{
		"throttled-forever":   {{status: 429, retryAfter: "1", body: throttled}},
		"unavailable-forever": {{status: 503, body: outage}},
		"assigning-forever":   {{status: 202, retryAfter: "1", body: assigning}},
		"long-retry-after":    {{status: 429, retryAfter: "300", body: throttled}},
	}
	for name, script := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, script...)
			st, took, err := register(t, f.config(), 1500*time.Millisecond)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Register = %+v, %v; want context.DeadlineExceeded", st, err)
			}
			// Not before the deadline; and not after a Retry-After that
			// outlasts it (300 s): a generous bound, not a timing claim.
			if took < 1400*time.Millisecond || took > 60*time.Second {
				t.Errorf("Register returned after %s, want at the 1.5 s deadline", took)
			}
			if len(f.requests()) == 0 {
				t.Error("no request sent")
			}
		})
	}
}

func TestRegisterMalformedAnswers(t *testing.T) {
	tests := map[string]struct {
		script []reply
		text   string
	}{
		"assigning-without-operation-id": {[]reply{{status: 202, body: `{"status":"assigning"}`}}, "without an operationId"},
		"assigned-without-state":         {[]reply{{status: 202, body: `{"operationId":"x","status":"assigned"}`}}, "without a registrationState"},
		"not-json":                       {[]reply{{status: 202, body: `<html>`}}, "decoding the answer"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFake(t, tc.script...)
			_, _, err := register(t, f.config(), 5*time.Second)
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("err = %v, want it to mention %q", err, tc.text)
			}
		})
	}
}

func TestRegisterConfigErrors(t *testing.T) {
	cert := tls.Certificate{}
	for name, cfg := range map[string]client.Config{
		"no-id-scope":         {RegistrationID: regID, SymmetricKey: deviceKey},
		"no-registration-id":  {IDScope: scope, SymmetricKey: deviceKey},
		"no-credentials":      {IDScope: scope, RegistrationID: regID},
		"certificate-and-key": {IDScope: scope, RegistrationID: regID, SymmetricKey: deviceKey, Certificate: &cert},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := client.Register(context.Background(), cfg); err == nil {
				t.Error("no error")
			}
		})
	}
}

// TestRegisterX509PresentsTheChain: the certificate and its chain go in the
// TLS handshake; no Authorization header is sent.
func TestRegisterX509PresentsTheChain(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 202, body: assigned})
	inter := testutil.NewRoot(t, pki.Options{CommonName: "Client Test Root"}).Intermediate(t, pki.Options{CommonName: "Client Test Intermediate"})
	leaf, key := inter.Leaf(t, pki.Options{CommonName: regID})
	cfg := f.config()
	cfg.SymmetricKey = nil
	cfg.Certificate = testutil.TLSCert(key, leaf, inter.Cert)
	if _, _, err := register(t, cfg, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	r := f.requests()
	if r[0].certs != 2 {
		t.Errorf("the server saw %d client certificates, want leaf and intermediate", r[0].certs)
	}
	if a := r[0].header.Get("Authorization"); a != "" {
		t.Errorf("X.509 device sent Authorization %q", a)
	}
}

// TestRegisterVerifiesTheServer: a server whose certificate the RootCAs do
// not vouch for is refused, at once (no retry).
func TestRegisterVerifiesTheServer(t *testing.T) {
	t.Parallel()
	f := newFake(t, reply{status: 202, body: assigned})
	cfg := f.config()
	cfg.RootCAs = x509.NewCertPool()
	_, _, err := register(t, cfg, 10*time.Second)
	var uae x509.UnknownAuthorityError
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &uae) && !errors.As(err, &cve) {
		t.Fatalf("err = %v, want a certificate verification error", err)
	}
	if n := f.conns.Load(); n != 1 || len(f.requests()) != 0 {
		t.Errorf("%d connections (want 1: no retry), %d requests reached the server", n, len(f.requests()))
	}
}
