package deviceapi_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/deviceapi"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

const hub = provtest.Hub1

// endpoint is the device endpoint the API is configured to advertise.
const endpoint = "dps.example.com:8443"

// api is the device API over a real SQLite store, with one linked hub and a
// symmetric-key group whose derived keys authenticate any registration ID.
type api struct {
	Store    store.Store
	Handler  http.Handler // httpx.Wrap around deviceapi.API, as served
	Scope    string
	groupKey []byte
}

func newAPI(t testing.TB) *api {
	t.Helper()
	st, inst, _ := provtest.OpenStore(t)
	t.Cleanup(func() { st.Close() })
	in := provtest.Instance{T: t, Store: st, Scope: inst.IDScope}
	in.LinkHub(hub, 1, true)
	gk, _ := provtest.Keys(t, in.PutGroup(provtest.SymGroup("grp-api")).Attestation)
	log, _ := testutil.NewLogger(t, slog.LevelInfo)
	p := &provisioning.Pipeline{Store: st, Attest: &attest.Attestor{Store: st, Log: log}, Log: log, IDScope: inst.IDScope, RetryAfter: 3}
	return &api{Store: st, Handler: httpx.Wrap(log, &deviceapi.API{Pipeline: p, Log: log, Endpoint: func() string { return endpoint }}), Scope: inst.IDScope, groupKey: gk}
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
		if k == "Host" {
			req.Host = v
			continue
		}
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
