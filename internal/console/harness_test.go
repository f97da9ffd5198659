package console_test

// The harness serves the console in front of the real service API on a
// SQLite store in t.TempDir(), on a TLS listener of 127.0.0.1, as the
// service listener does; a browser is an http.Client with a cookie jar
// that submits forms as a browser would (Origin header, form encoding).

import (
	"context"
	"html"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/console"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/serviceapi"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/testutil"
)

type harness struct {
	t     *testing.T
	Store store.Store
	URL   string // https://127.0.0.1:port
	Host  string
	Scope string
	srv   *httptest.Server

	mu  sync.Mutex
	now time.Time // the console's clock; zero: time.Now
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	st, err := sqlstore.Open(t.Context(), t.TempDir()+"/dpsd.db", sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inst, _, err := instance.Ensure(t.Context(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testutil.NewLogger(t, slog.LevelDebug)
	h := &harness{t: t, Store: st, Scope: inst.IDScope}
	api := serviceapi.New(serviceapi.Config{Store: st, Log: log, Now: h.clock,
		OwnHost: func(host string) bool { return host == "127.0.0.1" }})
	c := console.New(console.Config{
		API: httpx.Wrap(log, api), Authenticate: api.Authenticate, Log: log,
		Instance: func() console.Instance {
			return console.Instance{IDScope: inst.IDScope, DeviceEndpoint: h.Host, ServiceEndpoint: h.Host}
		},
		Counters: func() (float64, float64) { return 0, 0 },
		Now:      h.clock,
	})
	mux := http.NewServeMux()
	mux.Handle("/console/", c)
	mux.Handle("/console", c)
	mux.Handle("/", httpx.Wrap(log, api))
	h.srv = httptest.NewTLSServer(mux)
	h.URL = h.srv.URL
	h.Host = strings.TrimPrefix(h.srv.URL, "https://")
	t.Cleanup(func() { h.srv.Close(); st.Close() })
	return h
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.now.IsZero() {
		return time.Now()
	}
	return h.now
}

// setClock moves the console's clock (sessions are signed with it).
func (h *harness) setClock(t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = t
}

// policy creates a policy with rights and returns its primary key.
func (h *harness) policy(name string, rights ...string) string {
	h.t.Helper()
	key := sas.NewKey(dps.PolicyKeyBytes)
	if _, err := h.Store.PutPolicy(context.Background(), &store.Policy{Name: name, PrimaryKey: key, SecondaryKey: sas.NewKey(dps.PolicyKeyBytes), Rights: rights}, "*"); err != nil {
		h.t.Fatal(err)
	}
	return key
}

// ownerKey is the owner policy's primary key.
func (h *harness) ownerKey() string {
	h.t.Helper()
	p, err := h.Store.Policy(context.Background(), dps.OwnerPolicyName)
	if err != nil {
		h.t.Fatal(err)
	}
	return p.PrimaryKey
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	h   *harness
	c   *http.Client
	jar http.CookieJar
}

func (h *harness) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{
		Transport:     h.srv.Client().Transport.(*http.Transport).Clone(),
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       20 * time.Second,
	}
	return &browser{h: h, c: c, jar: jar}
}

// page is an answer with its body.
type page struct {
	Status int
	Header http.Header
	Body   string // as a browser shows it: HTML entities decoded
	Raw    string // as sent
}

func (b *browser) do(req *http.Request) *page {
	b.h.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &page{Status: resp.StatusCode, Header: resp.Header, Body: html.UnescapeString(string(body)), Raw: string(body)}
}

func (b *browser) get(path string) *page {
	b.h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.h.URL+path, nil)
	return b.do(req)
}

// post submits a form as a browser does: from the console's own origin,
// with the CSRF token of the page it was on (csrf "" sends none).
func (b *browser) post(path, csrf string, form url.Values) *page {
	b.h.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if csrf != "" {
		form.Set("csrf", csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, b.h.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.h.URL)
	return b.do(req)
}

// postFile submits a multipart form with one file field.
func (b *browser) postFile(path, csrf string, form url.Values, field, content string) *page {
	b.h.t.Helper()
	var buf strings.Builder
	mw := multipart.NewWriter(&buf)
	form.Set("csrf", csrf)
	for k, vs := range form {
		for _, v := range vs {
			mw.WriteField(k, v)
		}
	}
	fw, _ := mw.CreateFormFile(field, "file.pem")
	io.WriteString(fw, content)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, b.h.URL+path, strings.NewReader(buf.String()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Origin", b.h.URL)
	return b.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of a page's forms.
func (p *page) csrf(t *testing.T) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("the page has no CSRF token:\n%s", p.Body)
	}
	return m[1]
}

// want fails unless the page has status and contains every text.
func (p *page) want(t *testing.T, status int, texts ...string) *page {
	t.Helper()
	if p.Status != status {
		t.Fatalf("status %d, want %d:\n%s", p.Status, status, p.Body)
	}
	for _, s := range texts {
		if !strings.Contains(p.Body, s) {
			t.Fatalf("the page does not contain %q:\n%s", s, p.Body)
		}
	}
	return p
}

// signIn signs in with a policy's key and returns the overview.
func (b *browser) signIn(t *testing.T, policy, key string) *page {
	t.Helper()
	form := b.get("/console/signin").want(t, http.StatusOK)
	p := b.post("/console/signin", form.csrf(t), url.Values{"policy": {policy}, "key": {key}})
	if p.Status != http.StatusSeeOther {
		t.Fatalf("sign in: status %d:\n%s", p.Status, p.Body)
	}
	return b.get("/console/").want(t, http.StatusOK, policy)
}
