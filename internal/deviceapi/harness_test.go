package deviceapi_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/deviceapi"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/enrollment"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

const hub = "hub-1.azure-devices.net"

// api is the device API over a real SQLite store, with one linked hub and a
// symmetric-key group whose derived keys authenticate any registration ID.
type api struct {
	Store    store.Store
	Handler  http.Handler // httpx.Wrap around deviceapi.API, as served
	Scope    string
	groupKey []byte
	logs     *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		b.buf.Reset() // fuzzing logs a lot
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newAPI(t testing.TB) *api {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "dpsd.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	inst, _, err := instance.Ensure(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutLinkedHub(ctx, &store.LinkedHub{Name: hub, AllocationWeight: 1, ApplyAllocationPolicy: true}, ""); err != nil {
		t.Fatal(err)
	}
	g := &dps.EnrollmentGroup{EnrollmentGroupID: "grp-api", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: "symmetricKey"}}}
	if err := enrollment.PrepareGroup(ctx, g, nil, st); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutGroup(ctx, g, ""); err != nil {
		t.Fatal(err)
	}
	gk, _ := sas.DecodeKey(g.Attestation.SymmetricKey.PrimaryKey)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	p := &provisioning.Pipeline{Store: st, Attest: &attest.Attestor{Store: st, Log: log}, Log: log, IDScope: inst.IDScope, RetryAfter: 3}
	a := &api{Store: st, Handler: httpx.Wrap(log, &deviceapi.API{Pipeline: p, Log: log}), Scope: inst.IDScope, groupKey: gk, logs: logs}
	t.Cleanup(func() {
		if t.Failed() {
			s := logs.String()
			if len(s) > 10000 {
				s = s[len(s)-10000:]
			}
			t.Logf("server log (tail):\n%s", s)
		}
	})
	return a
}

// token is a valid SAS token of a device of the group (C SDK encoding).
func (a *api) token(id string) string {
	return sas.New(sas.DeviceResource(a.Scope, id), "registration", sas.DeriveDeviceKey(a.groupKey, id), time.Now().Add(time.Hour), true)
}

// server serves the API over real TLS (requesting client certificates).
func (a *api) server(t testing.TB) (base string, c *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(a.Handler)
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return srv.URL, &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func send(t testing.TB, c *http.Client, method, url string, hdr map[string]string, body []byte) *response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &response{resp.StatusCode, resp.Header, b}
}

func decode(t testing.TB, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, b, err)
	}
}
