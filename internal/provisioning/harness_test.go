package provisioning_test

// The harness runs the device API as dpsd serves it — deviceapi.API behind
// httpx.Wrap, on a real TLS listener that requests (and does not verify)
// client certificates — in front of a real SQLite store in t.TempDir().
// Devices connect with real TLS client certificates or SAS tokens.
//
// A store call that never returns must fail a test, not hang the package:
// requests have a client timeout, pipeline calls made in-process go through
// within(), and the cleanup gives up on a server whose handler is stuck.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/deviceapi"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/journal"
	"github.com/dpsd/dpsd/internal/metrics"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/cache"
	"github.com/dpsd/dpsd/internal/testutil"
)

// requestTimeout bounds every device request. A registration takes
// milliseconds; anything near this is a hang.
const requestTimeout = 20 * time.Second

const apiVersion = "2021-06-01"

// Linked hub names used across the tests.
const (
	hub1 = provtest.Hub1
	hub2 = provtest.Hub2
)

// harness is the instance (its store, its ID scope, and the fixtures its
// methods enroll) behind the device API.
type harness struct {
	provtest.Instance
	Pipeline *provisioning.Pipeline
	Journal  *journal.Journal
	Host     string // 127.0.0.1:port
	roots    *x509.CertPool
	logs     *testutil.LogBuffer
	db       *sql.DB // read-only, for snapshots

	mu      sync.Mutex
	clients map[*tls.Certificate]*http.Client
}

type options struct {
	strict bool
	// scope replaces the instance's ID scope (the SAS test vectors of docs/protocol.md use 0ne00111111).
	scope string
	// now is the attestor's clock (validity periods, SAS expiry).
	now func() time.Time
	// ttl is Pipeline.OperationTTL.
	ttl time.Duration
	// journalStore is the store the refusal journal writes to (nil: the
	// harness's).
	journalStore func(store.Store) store.Store
	// ca makes the pipeline trust the hub doubles of hubtest: the
	// registries of linked hubs and allocation webhooks can be called.
	ca *hubtest.CA
	// assignWait and assignTimeout are the pipeline's (short defaults for
	// the tests, so that a slow hub does not slow them down).
	assignWait, assignTimeout time.Duration
	// pipelineStore wraps the store the pipeline and the attestor read
	// (nil: the cache as it is).
	pipelineStore func(store.Store) store.Store
}

func newHarness(t testing.TB, o options) *harness {
	t.Helper()
	st, inst, dbPath := provtest.OpenStore(t)
	scope := inst.IDScope
	if o.scope != "" {
		scope = o.scope
	}
	log, logs := testutil.NewLogger(t, slog.LevelDebug)
	var jst store.Store = st
	if o.journalStore != nil {
		jst = o.journalStore(st)
	}
	j := journal.New(jst, journal.Options{Log: log})
	// As in dpsd: the pipeline reads through a cache, and the tests write
	// their fixtures to the store, as the service API does.
	cached := cache.New(st)
	var ps store.Store = cached
	if o.pipelineStore != nil {
		ps = o.pipelineStore(cached)
	}
	p := &provisioning.Pipeline{
		Journal:      j,
		Store:        ps,
		Sync:         cached.Sync,
		Attest:       &attest.Attestor{Store: ps, Log: log, Now: o.now},
		Log:          log,
		Metrics:      metrics.New(),
		IDScope:      scope,
		Strict:       o.strict,
		RetryAfter:   3, // what server.Config.Init sets
		OperationTTL: o.ttl,
		// Hub retries without long backoffs.
		HubRetry:      hub.Retry{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		AssignWait:    cmp.Or(o.assignWait, 5*time.Second),
		AssignTimeout: cmp.Or(o.assignTimeout, 10*time.Second),
	}
	if o.ca != nil {
		p.Outbound = o.ca.Client(t, outbound.Options{})
	}
	api := &deviceapi.API{Pipeline: p, Log: log}
	srv := httptest.NewUnstartedServer(httpx.Wrap(log, api))
	api.Endpoint = srv.Listener.Addr().String // what the devices dial
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	h := &harness{
		Instance: provtest.Instance{T: t, Store: st, Scope: scope},
		Pipeline: p, Journal: j, Host: srv.Listener.Addr().String(),
		roots: x509.NewCertPool(), logs: logs,
		clients: map[*tls.Certificate]*http.Client{},
	}
	h.roots.AddCert(srv.Certificate())
	t.Cleanup(func() {
		h.mu.Lock()
		for _, c := range h.clients {
			c.CloseIdleConnections()
		}
		h.mu.Unlock()
		// A handler stuck in the store keeps Close waiting forever: give
		// up after a while, so that one hang fails one test only.
		if !within(10*time.Second, func() {
			srv.Close()
			// Jobs still running end before the store closes.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			p.Drain(ctx)
			cancel()
			j.Close()
			st.Close()
		}) {
			t.Errorf("the device API did not shut down within 10 s: a request is stuck (in the store?)")
		}
	})
	h.db = provtest.OpenSnapshots(t, dbPath)
	return h
}

// within runs f and reports whether it returned within d. When it does not,
// f keeps running in the background.
func within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// register calls Pipeline.Register in-process and fails the test if it does
// not return within requestTimeout.
func (h *harness) pipelineRegister(t testing.TB, req provisioning.Request) (*provisioning.Answer, error) {
	t.Helper()
	var ans *provisioning.Answer
	var err error
	if !within(requestTimeout, func() { ans, err = h.Pipeline.Register(context.Background(), req) }) {
		t.Fatalf("Pipeline.Register(%q) did not return within %s (stuck in the store?)", req.RegistrationID, requestTimeout)
	}
	return ans, err
}

// ---- device requests ----

type response struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error // transport error (timeout: a hang)
}

func (h *harness) client(c *tls.Certificate) *http.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hc, ok := h.clients[c]; ok {
		return hc
	}
	tc := &tls.Config{RootCAs: h.roots, MinVersion: tls.VersionTLS12}
	if c != nil {
		tc.Certificates = []tls.Certificate{*c}
	}
	hc := &http.Client{Timeout: requestTimeout, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 32}}
	h.clients[c] = hc
	return hc
}

// do sends one request. path is relative to the server; api-version is
// added unless the path has a query.
func (h *harness) do(t testing.TB, c provtest.Cred, method, path string, hdr map[string]string, body []byte) *response {
	t.Helper()
	if !strings.Contains(path, "?") {
		path += "?api-version=" + apiVersion
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://"+h.Host+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	req.Header.Set("Accept", "application/json")
	if c.SAS != "" {
		req.Header.Set("Authorization", c.SAS)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := h.client(c.Cert).Do(req)
	if err != nil {
		return &response{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &response{Status: resp.StatusCode, Header: resp.Header, Body: b, Err: err}
}

func regPath(scope, id string) string {
	return "/" + url.PathEscape(scope) + "/registrations/" + url.PathEscape(id)
}

// register sends PUT .../register with {"registrationId": id}, as curl and
// the C SDK do.
func (h *harness) register(t testing.TB, c provtest.Cred, id string) *response {
	t.Helper()
	return h.registerIn(t, c, h.Scope, id)
}

func (h *harness) registerIn(t testing.TB, c provtest.Cred, scope, id string) *response {
	t.Helper()
	return h.do(t, c, http.MethodPut, regPath(scope, id)+"/register", nil, deviceBody(id, c))
}

// deviceBody is the body of a register or lookup: the registration ID, and
// a TPM device's keys.
func deviceBody(id string, c provtest.Cred) []byte {
	body, _ := json.Marshal(dps.DeviceRegistration{RegistrationID: id, TPM: c.TPM})
	return body
}

// registerBody sends PUT .../register with body (nil: {"registrationId": id}).
func (h *harness) registerBody(t testing.TB, c provtest.Cred, id string, body []byte) *response {
	t.Helper()
	if body == nil {
		return h.register(t, c, id)
	}
	return h.do(t, c, http.MethodPut, regPath(h.Scope, id)+"/register", nil, body)
}

func (h *harness) poll(t testing.TB, c provtest.Cred, id, opID string) *response {
	t.Helper()
	return h.do(t, c, http.MethodGet, regPath(h.Scope, id)+"/operations/"+url.PathEscape(opID), nil, nil)
}

func (h *harness) lookup(t testing.TB, c provtest.Cred, id string) *response {
	t.Helper()
	return h.do(t, c, http.MethodPost, regPath(h.Scope, id), nil, deviceBody(id, c))
}

// must fails the test on a transport error (a timeout means a hang).
func (r *response) must(t testing.TB, what string) *response {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("%s: %v", what, r.Err)
	}
	return r
}

func (r *response) String() string {
	if r.Err != nil {
		return "transport error: " + r.Err.Error()
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, r.Body)
}

// operation decodes a RegistrationOperationStatus, refusing unknown fields.
func (r *response) operation(t testing.TB) *dps.RegistrationOperationStatus {
	t.Helper()
	var op dps.RegistrationOperationStatus
	provtest.StrictDecode(t, r.Body, &op)
	return &op
}

func (r *response) result(t testing.TB) *dps.DeviceRegistrationResult {
	t.Helper()
	var res dps.DeviceRegistrationResult
	provtest.StrictDecode(t, r.Body, &res)
	return &res
}

// checkHeaders checks what every device API answer carries.
func checkHeaders(t testing.TB, r *response) {
	t.Helper()
	if got := r.Header.Get("Content-Type"); got != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q, want application/json; charset=utf-8", got)
	}
	if id := r.Header.Get("x-ms-request-id"); !provtest.IsUUID(id) {
		t.Errorf("x-ms-request-id = %q, want a UUID", id)
	}
}

// checkRefusal checks an error answer: status, the DPS error JSON
// (provtest.CheckError: errorCode, the reason in the message, trackingId,
// timestampUtc), trackingId = x-ms-request-id, x-ms-error-code.
func checkRefusal(t testing.TB, r *response, status, code int, reason string) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("request failed: %v", r.Err)
	}
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	checkHeaders(t, r)
	e := provtest.CheckError(t, r.Body, r.Status, code, reason)
	if e.TrackingID != r.Header.Get("x-ms-request-id") {
		t.Errorf("trackingId %q != x-ms-request-id %q", e.TrackingID, r.Header.Get("x-ms-request-id"))
	}
	if got := r.Header.Get("x-ms-error-code"); got != strconv.Itoa(code) {
		t.Errorf("x-ms-error-code = %q, want %d", got, code)
	}
}

// noRecord checks that a registration ID has no registration record.
func (h *harness) noRecord(t testing.TB, id string) {
	t.Helper()
	if r, err := h.Store.Registration(context.Background(), id); err == nil {
		t.Errorf("registration %q has a record (status %s), want none", id, r.Result.Status)
	}
}

// ---- expectations on a registration record ----

type want struct {
	regID     string
	deviceID  string
	hub       string
	status    string // default assigned
	substatus string // default initialAssignment when assigned
	mechanism string // x509 or symmetricKey
	groupID   string
	leaf      *x509.Certificate // x509.certificateInfo
	signer    *x509.Certificate // x509.signingCertificateInfo (groups)
	errorCode int
	errorText string
}

// checkResult checks a registrationState against w. notBefore bounds the
// record's timestamps from below (zero: unchecked).
func checkResult(t testing.TB, r *dps.DeviceRegistrationResult, w want, notBefore time.Time) {
	t.Helper()
	if r == nil {
		t.Fatal("registrationState is missing")
	}
	status := w.status
	if status == "" {
		status = dps.StatusAssigned
	}
	if !strings.EqualFold(r.RegistrationID, w.regID) {
		t.Errorf("registrationId = %q, want %q", r.RegistrationID, w.regID)
	}
	if r.Status != status {
		t.Errorf("status = %q, want %q (errorCode %d, errorMessage %q)", r.Status, status, r.ErrorCode, r.ErrorMessage)
	}
	switch status {
	case dps.StatusAssigned:
		sub := w.substatus
		if sub == "" {
			sub = dps.SubstatusInitialAssignment
		}
		if r.Substatus != sub {
			t.Errorf("substatus = %q, want %q", r.Substatus, sub)
		}
		if r.AssignedHub != w.hub {
			t.Errorf("assignedHub = %q, want %q", r.AssignedHub, w.hub)
		}
		if r.DeviceID != w.deviceID {
			t.Errorf("deviceId = %q, want %q", r.DeviceID, w.deviceID)
		}
		if r.ErrorCode != 0 || r.ErrorMessage != "" {
			t.Errorf("assigned with errorCode %d, errorMessage %q", r.ErrorCode, r.ErrorMessage)
		}
	case dps.StatusFailed, dps.StatusDisabled:
		if r.AssignedHub != "" || r.DeviceID != "" {
			t.Errorf("%s with assignedHub %q, deviceId %q; want neither", status, r.AssignedHub, r.DeviceID)
		}
		if r.ErrorCode != w.errorCode {
			t.Errorf("errorCode = %d, want %d", r.ErrorCode, w.errorCode)
		}
		if !strings.Contains(r.ErrorMessage, w.errorText) {
			t.Errorf("errorMessage = %q, want it to contain %q", r.ErrorMessage, w.errorText)
		}
	}
	if status != dps.StatusDisabled {
		if r.CreatedDateTimeUtc == nil || r.LastUpdatedDateTimeUtc == nil || r.Etag == "" {
			t.Fatalf("record without createdDateTimeUtc/lastUpdatedDateTimeUtc/etag: %+v", r)
		}
		if !notBefore.IsZero() {
			if r.CreatedDateTimeUtc.Before(notBefore.Add(-time.Second)) || r.CreatedDateTimeUtc.After(time.Now().Add(time.Second)) {
				t.Errorf("createdDateTimeUtc = %s, want between %s and now", r.CreatedDateTimeUtc.Format(), notBefore.UTC().Format(time.RFC3339Nano))
			}
		}
		if r.LastUpdatedDateTimeUtc.Before(r.CreatedDateTimeUtc.Time) {
			t.Errorf("lastUpdatedDateTimeUtc %s is before createdDateTimeUtc %s", r.LastUpdatedDateTimeUtc.Format(), r.CreatedDateTimeUtc.Format())
		}
	}
	switch w.mechanism {
	case dps.AttestationX509:
		if r.SymmetricKey != nil {
			t.Errorf("x509 device with symmetricKey %+v", r.SymmetricKey)
		}
		if r.X509 == nil {
			t.Fatal("x509 is missing")
		}
		if r.X509.EnrollmentGroupID != w.groupID {
			t.Errorf("x509.enrollmentGroupId = %q, want %q", r.X509.EnrollmentGroupID, w.groupID)
		}
		if w.leaf != nil {
			ci := r.X509.CertificateInfo
			if ci == nil {
				t.Fatal("x509.certificateInfo is missing")
			}
			wi := pki.Info(w.leaf)
			if ci.SHA256Thumbprint != wi.SHA256Thumbprint || ci.SHA1Thumbprint != wi.SHA1Thumbprint ||
				ci.SubjectName != wi.SubjectName || ci.IssuerName != wi.IssuerName || ci.SerialNumber != wi.SerialNumber || ci.Version != 3 {
				t.Errorf("x509.certificateInfo = %+v, want %+v", ci, wi)
			}
			if ci.NotAfterUtc == nil || !ci.NotAfterUtc.Equal(w.leaf.NotAfter) {
				t.Errorf("certificateInfo.notAfterUtc = %v, want %v", ci.NotAfterUtc, w.leaf.NotAfter)
			}
		}
		if w.signer != nil {
			si := r.X509.SigningCertificateInfo
			if si == nil || si.SHA256Thumbprint != pki.SHA256Thumbprint(w.signer) {
				t.Errorf("x509.signingCertificateInfo = %+v, want the certificate %s", si, w.signer.Subject)
			}
		}
	case dps.AttestationSymmetricKey:
		if r.X509 != nil {
			t.Errorf("symmetric-key device with x509 %+v", r.X509)
		}
		if w.groupID == "" {
			if r.SymmetricKey != nil && r.SymmetricKey.EnrollmentGroupID != "" {
				t.Errorf("individual enrollment with symmetricKey.enrollmentGroupId %q", r.SymmetricKey.EnrollmentGroupID)
			}
		} else if r.SymmetricKey == nil || r.SymmetricKey.EnrollmentGroupID != w.groupID {
			t.Errorf("symmetricKey = %+v, want enrollmentGroupId %q", r.SymmetricKey, w.groupID)
		}
	}
}

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

var operationIDRE = regexp.MustCompile(`^[0-9]\.[0-9a-f]{16}\.[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// provision runs a device's register request and its poll, and checks the
// wire contract of both in the harness's mode:
//
//	fast:   register 202 with the terminal status and registrationState
//	strict: register 202 "assigning", Retry-After 3, no registrationState
//	both:   Location, x-ms-request-id, JSON content type; the poll answers
//	        200 with the terminal result (the same as the fast answer)
//
// It returns the final operation status.
func (h *harness) provision(t testing.TB, c provtest.Cred, id string) *dps.RegistrationOperationStatus {
	t.Helper()
	return h.provisionBody(t, c, id, nil)
}

// provisionBody is provision with the register body given (nil:
// {"registrationId": id}).
func (h *harness) provisionBody(t testing.TB, c provtest.Cred, id string, body []byte) *dps.RegistrationOperationStatus {
	t.Helper()
	r := h.registerBody(t, c, id, body).must(t, "register")
	if r.Status != http.StatusAccepted {
		t.Fatalf("register: %s, want 202", r)
	}
	checkHeaders(t, r)
	if got, want := r.Header.Get("Location"), "https://"+h.Host+regPath(h.Scope, id)+"/register"; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	first := r.operation(t)
	if !operationIDRE.MatchString(first.OperationID) {
		t.Errorf("operationId %q is not shaped {digit}.{16 hex}.{uuid}", first.OperationID)
	}
	if h.Pipeline.Strict {
		if first.Status != dps.StatusAssigning || first.RegistrationState != nil {
			t.Errorf("strict register answered status %q, registrationState %v; want assigning and none", first.Status, first.RegistrationState)
		}
		if got := r.Header.Get("Retry-After"); got != "3" {
			t.Errorf("strict register: Retry-After = %q, want 3", got)
		}
	} else {
		if first.Status == dps.StatusAssigning || first.Status == dps.StatusUnassigned {
			t.Errorf("fast register answered %q, want a terminal status", first.Status)
		}
		if first.RegistrationState == nil {
			t.Fatalf("fast register answered without registrationState: %s", r.Body)
		}
		if first.RegistrationState.Status != first.Status {
			t.Errorf("status %q but registrationState.status %q", first.Status, first.RegistrationState.Status)
		}
		// Every register 202 carries Retry-After, as Azure's do; a device
		// that reads the terminal status does not wait for it.
		if got := r.Header.Get("Retry-After"); got != "3" {
			t.Errorf("fast register: Retry-After = %q, want 3", got)
		}
	}
	var final *dps.RegistrationOperationStatus
	for i := 0; i < 2; i++ { // polling twice gives the same answer
		p := h.poll(t, c, id, first.OperationID).must(t, "poll")
		if p.Status != http.StatusOK {
			t.Fatalf("poll: %s, want 200", p)
		}
		checkHeaders(t, p)
		op := p.operation(t)
		if op.OperationID != first.OperationID {
			t.Errorf("poll operationId = %q, want %q", op.OperationID, first.OperationID)
		}
		if op.RegistrationState == nil || op.RegistrationState.Status != op.Status {
			t.Fatalf("poll answer: %s", p.Body)
		}
		if !h.Pipeline.Strict && testutil.JSON(t, op) != testutil.JSON(t, first) {
			t.Errorf("poll answer differs from the register answer:\n poll     %s\n register %s", testutil.JSON(t, op), testutil.JSON(t, first))
		}
		if final != nil && testutil.JSON(t, op) != testutil.JSON(t, final) {
			t.Errorf("second poll differs from the first:\n %s\n %s", testutil.JSON(t, op), testutil.JSON(t, final))
		}
		final = op
	}
	return final
}

// checkLookup checks that the status lookup and the store return the same
// record as res.
func (h *harness) checkLookup(t testing.TB, c provtest.Cred, id string, res *dps.DeviceRegistrationResult) {
	t.Helper()
	r := h.lookup(t, c, id).must(t, "status lookup")
	if r.Status != http.StatusOK {
		t.Fatalf("status lookup: %s, want 200", r)
	}
	checkHeaders(t, r)
	if got, want := testutil.JSON(t, r.result(t)), testutil.JSON(t, res); got != want {
		t.Errorf("status lookup differs from the operation's registrationState:\n lookup %s\n op     %s", got, want)
	}
	rec, err := h.Store.Registration(context.Background(), id)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	if got, want := testutil.JSON(t, rec.Result), testutil.JSON(t, res); got != want {
		t.Errorf("stored record differs from the operation's registrationState:\n store %s\n op    %s", got, want)
	}
}
