package outbound

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/testutil"
)

// tlsServer starts an HTTPS server on 127.0.0.1 and returns it with a CA
// file that trusts it.
func tlsServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, string) {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	file := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(file, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return srv, file
}

func newClient(t *testing.T, o Options) *Client {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantKind(t *testing.T, err error, k Kind) *Error {
	t.Helper()
	e := AsError(err)
	if e == nil {
		t.Fatalf("err = %v (%T), want *Error of kind %v", err, err, k)
	}
	if e.Kind != k {
		t.Fatalf("kind = %v, want %v (%v)", e.Kind, k, e)
	}
	return e
}

func TestHTTPSWithCAFile(t *testing.T) {
	var got *http.Request
	var gotBody string
	srv, ca := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		got = r
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("X-Answer", "yes")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"ok":true}`)
	})
	c := newClient(t, Options{CAFile: ca, Version: "1.2.3"})
	resp, err := c.Do(context.Background(), &Request{Method: "PUT", URL: srv.URL + "/devices/a?api-version=1",
		Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusCreated || string(resp.Body) != `{"ok":true}` || resp.Header.Get("X-Answer") != "yes" {
		t.Fatalf("response = %d %q %v", resp.Status, resp.Body, resp.Header)
	}
	if got.Method != "PUT" || got.URL.Path != "/devices/a" || got.URL.RawQuery != "api-version=1" {
		t.Fatalf("request line = %s %s", got.Method, got.URL)
	}
	if ua := got.Header.Get("User-Agent"); ua != "dpsd/1.2.3" {
		t.Fatalf("User-Agent = %q", ua)
	}
	if ct := got.Header.Get("Content-Type"); ct != "application/json" || gotBody != `{"x":1}` {
		t.Fatalf("Content-Type %q body %q", ct, gotBody)
	}
}

func TestTLSNotTrustedWithoutCAFile(t *testing.T) {
	srv, _ := tlsServer(t, func(w http.ResponseWriter, r *http.Request) { t.Error("request reached the server") })
	c := newClient(t, Options{})
	_, err := c.Do(context.Background(), &Request{Method: "GET", URL: srv.URL})
	e := wantKind(t, err, KindTLS)
	if e.Retryable() {
		t.Fatal("a TLS failure is not retryable")
	}
}

func TestHTTPToLoopbackOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") }))
	t.Cleanup(srv.Close)
	c := newClient(t, Options{})
	resp, err := c.Do(context.Background(), &Request{Method: "GET", URL: srv.URL})
	if err != nil || string(resp.Body) != "plain" {
		t.Fatalf("http to 127.0.0.1: %v %v", resp, err)
	}
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	resp, err = c.Do(context.Background(), &Request{Method: "GET", URL: "http://localhost:" + port})
	if err != nil || string(resp.Body) != "plain" {
		t.Fatalf("http to localhost: %v %v", resp, err)
	}
	// 192.0.2.1 is TEST-NET-1: were it dialled, the test would time out
	// instead of failing at once.
	_, err = c.Do(context.Background(), &Request{Method: "POST", URL: "http://192.0.2.1/hook?code=s3cret"})
	e := wantKind(t, err, KindURL)
	if !strings.Contains(e.Error(), "loopback") || strings.Contains(e.Error(), "s3cret") {
		t.Fatalf("message %q", e.Error())
	}
}

func TestCheckURL(t *testing.T) {
	tests := map[string]struct {
		url     string
		wantErr string // substring; "" for ok
	}{
		"ok/https any host":          {url: "https://alloc.example.com/api/hook?code=abc"},
		"ok/https with port":         {url: "https://hub.local:9443/x"},
		"ok/http localhost":          {url: "http://localhost:8080/hook"},
		"ok/http LOCALHOST":          {url: "http://LOCALHOST/hook"},
		"ok/http 127.0.0.1":          {url: "http://127.0.0.1:1/"},
		"ok/http 127.8.9.10":         {url: "http://127.8.9.10/"},
		"ok/http ::1":                {url: "http://[::1]:8080/"},
		"ok/http with basic auth":    {url: "http://user:pw@127.0.0.1/"},
		"fail/http private address":  {url: "http://10.0.0.1/hook", wantErr: "loopback"},
		"fail/http public name":      {url: "http://example.com/hook", wantErr: "loopback"},
		"fail/http localhost-like":   {url: "http://localhost.example.com/", wantErr: "loopback"},
		"fail/ftp":                   {url: "ftp://example.com/x", wantErr: "scheme"},
		"fail/relative":              {url: "/api/hook", wantErr: "no host"},
		"fail/no scheme":             {url: "example.com/hook", wantErr: "no host"},
		"fail/empty":                 {url: "", wantErr: "no host"},
		"fail/bad escape":            {url: "https://example.com/%zz", wantErr: "not valid"},
		"fail/too long":              {url: "https://example.com/" + strings.Repeat("a", MaxURLLength), wantErr: "longer"},
		"fail/port only":             {url: "https://:443/x", wantErr: "no host"},
		"fail/javascript":            {url: "javascript:alert(1)", wantErr: "no host"},
		"fail/http unspecified addr": {url: "http://0.0.0.0/", wantErr: "loopback"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := CheckURL(tc.url)
			testutil.WantError(t, err, tc.wantErr)
		})
	}
}

func TestRedirects(t *testing.T) {
	var srv *httptest.Server
	srv, ca := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/final", http.StatusTemporaryRedirect)
		case "/final":
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, r.Method+" "+string(b))
		case "/other-host":
			// Same server under another name: a different origin.
			http.Redirect(w, r, strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)+"/final", http.StatusTemporaryRedirect)
		case "/to-http":
			http.Redirect(w, r, "http://127.0.0.1:1/final", http.StatusTemporaryRedirect)
		case "/see-other":
			http.Redirect(w, r, "/final", http.StatusSeeOther)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusTemporaryRedirect)
		}
	})
	c := newClient(t, Options{CAFile: ca})
	post := func(path string) (*Response, error) {
		return c.Do(context.Background(), &Request{Method: "POST", URL: srv.URL + path, Body: []byte("body")})
	}
	resp, err := post("/same")
	if err != nil || string(resp.Body) != "POST body" {
		t.Fatalf("same-origin 307: %v %v", resp, err)
	}
	for _, path := range []string{"/other-host", "/to-http", "/see-other", "/loop"} {
		_, err := post(path)
		e := wantKind(t, err, KindRedirect)
		if e.Retryable() {
			t.Fatalf("%s: a refused redirect is not retryable", path)
		}
	}
}

func TestTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv, ca := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		panic(http.ErrAbortHandler) // never an answer
	})
	c := newClient(t, Options{CAFile: ca})
	_, err := c.Do(context.Background(), &Request{Method: "GET", URL: srv.URL, Timeout: 50 * time.Millisecond})
	e := wantKind(t, err, KindTimeout)
	if !e.Retryable() || !e.Timeout() || !strings.Contains(e.Error(), "no answer within") {
		t.Fatalf("timeout error %q: retryable %v", e, e.Retryable())
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err = c.Do(ctx, &Request{Method: "GET", URL: srv.URL})
	wantKind(t, err, KindCanceled)
}

func TestResponseTooLarge(t *testing.T) {
	srv, ca := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 101))
	})
	c := newClient(t, Options{CAFile: ca, MaxResponseBytes: 100})
	_, err := c.Do(context.Background(), &Request{Method: "GET", URL: srv.URL})
	wantKind(t, err, KindTooLarge)

	c = newClient(t, Options{CAFile: ca, MaxResponseBytes: 101})
	if resp, err := c.Do(context.Background(), &Request{Method: "GET", URL: srv.URL}); err != nil || len(resp.Body) != 101 {
		t.Fatalf("at the limit: %v", err)
	}
}

func TestNetworkErrorHidesURLSecrets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c := newClient(t, Options{})
	_, err = c.Do(context.Background(), &Request{Method: "POST", URL: "https://user:pa55@" + addr + "/hook?code=s3cret"})
	e := wantKind(t, err, KindNetwork)
	if !e.Retryable() {
		t.Fatal("a refused connection is retryable")
	}
	for _, secret := range []string{"s3cret", "pa55", "user"} {
		if strings.Contains(e.Error(), secret) {
			t.Fatalf("error %q contains %q", e.Error(), secret)
		}
	}
	if want := "https://" + addr + "/hook?****"; e.URL != want {
		t.Fatalf("URL = %q, want %q", e.URL, want)
	}
}

func TestCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not pem\n"), 0o644)
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), 0o644)
	for file, want := range map[string]string{
		filepath.Join(dir, "missing.pem"): "no such file",
		empty:                             "holds no PEM certificate",
		bad:                               "certificate 1",
	} {
		if _, err := New(Options{CAFile: file}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%s) = %v, want an error containing %q", filepath.Base(file), err, want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://fn.azurewebsites.net/api/alloc?code=KEY": "https://fn.azurewebsites.net/api/alloc?****",
		"https://u:p@h:9443/a%20b":                        "https://h:9443/a%20b",
		"http://127.0.0.1/x#frag":                         "http://127.0.0.1/x",
		"::not a url":                                     "(invalid URL)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
