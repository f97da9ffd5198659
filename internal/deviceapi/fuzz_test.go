package deviceapi_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
)

var fuzzMethods = []string{"GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"}

// FuzzDeviceAPIPath sends arbitrary request targets, methods, bodies and
// credentials to the device API as served (httpx.Wrap, which turns a panic
// into a 500). Whatever arrives, the answer is never a 5xx, always a JSON
// body with the JSON content type and a request ID, and an error answer is a
// DPS error body whose errorCode starts with the HTTP status.
//
// cred picks the credentials: 0 none, 1 a valid SAS token of a group device
// named by the path's third segment (so garbage reaches the store), 2 a
// malformed token, 3 a self-signed client certificate, 4 a token whose sr is
// the raw path.
func FuzzDeviceAPIPath(f *testing.F) {
	a := newAPI(f)
	leaf, _, err := pki.NewSelfSigned(pki.Options{CommonName: "fuzz-dev"})
	if err != nil {
		f.Fatal(err)
	}
	s := a.Scope
	seeds := []struct {
		method uint8
		target string
		body   string
		cred   uint8
	}{
		{1, "/" + s + "/registrations/fuzz-dev/register?api-version=2021-06-01", `{"registrationId":"fuzz-dev"}`, 1},
		{1, "/" + s + "/registrations/fuzz-dev/register?api-version=2021-06-01", `{"registrationId":"fuzz-dev"}`, 3},
		{0, "/" + s + "/registrations/fuzz-dev/operations/5.0123456789abcdef.00000000-0000-4000-8000-000000000000?api-version=2021-06-01", `{}`, 1},
		{0, "/" + s + "/registrations/fuzz-dev/operations/%00?api-version=2021-06-01", ``, 1},
		{0, "/" + s + "/registrations/fuzz-dev/operations/%25?api-version=2021-06-01", ``, 1},
		{2, "/" + s + "/registrations/fuzz-dev", `{"registrationId":"fuzz-dev","csr":"x"}`, 1},
		{2, "/" + s + "/registrations/fuzz-dev", `{"registrationId":"fuzz-dev"}`, 1},
		{1, "/" + s + "/registrations/Fuzz-Dev-2/register", `{"registrationId":"fuzz-dev-2","payload":[1,{"a":null}]}`, 1},
		{1, "/" + s + "/registrations/fuzz-dev-3/register", `{"registrationId":5}`, 1},
		{1, "/" + s + "/registrations/fuzz-dev-4/register", `{"tpm":{"endorsementKey":"AA=="}}`, 0},
		{1, "/" + s + "/registrations/" + strings.Repeat("a", 200) + "/register", ``, 1},
		{1, "/" + s + "/registrations/%ZZ/register", ``, 1},
		{1, "/" + s + "/registrations/a%2Fb/register", ``, 1},
		{1, "/" + s + "/registrations/%E2%82%AC/register", ``, 1},
		{1, "/" + s + "//registrations/x/register", ``, 1},
		{1, "/" + s + "/registrations//register", ``, 1},
		{1, "/" + s + "/registrations/x/register", ``, 2},
		{1, "/" + s + "/registrations/x/register", ``, 4},
		{1, "/0ne00000000/registrations/x/register", ``, 1},
		{0, "/", ``, 0},
		{0, "/registrations", ``, 0},
		{0, "/a/registrations/b/operations/c/d", ``, 0},
		{5, "/" + s + "/registrations/fuzz-dev/register", ``, 1},
		{6, "*", ``, 0},
		{0, "/%2e%2e/%2e%2e/etc/passwd", ``, 0},
		{1, "/" + s + "/REGISTRATIONS/fuzz-dev/REGISTER/", `null`, 1},
	}
	for _, sd := range seeds {
		f.Add(sd.method, sd.target, []byte(sd.body), sd.cred)
	}
	tlsState := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, HandshakeComplete: true, Version: tls.VersionTLS13}
	f.Fuzz(func(t *testing.T, method uint8, target string, b []byte, cred uint8) {
		// What net/http's server would hand to the handler: it refuses
		// request lines whose target does not parse.
		if target == "" || strings.ContainsAny(target, " \r\n\x00") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || (u.Path == "" && target != "*") {
			return
		}
		r := &http.Request{
			Method: fuzzMethods[int(method)%len(fuzzMethods)], URL: u, RequestURI: target,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Host: "dps.example.com",
			Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b)),
		}
		r = r.WithContext(t.Context())
		segs := strings.Split(strings.Trim(u.EscapedPath(), "/"), "/")
		id := ""
		if len(segs) >= 3 {
			id, _ = url.PathUnescape(segs[2])
		}
		switch cred % 5 {
		case 1:
			if id != "" && len(id) < 1000 {
				r.Header.Set("Authorization", a.token(id))
			}
		case 2:
			r.Header.Set("Authorization", "SharedAccessSignature sr="+string(b)+"&sig=%%&se=x")
		case 3:
			r.TLS = tlsState
		case 4:
			r.Header.Set("Authorization", "SharedAccessSignature sr="+u.EscapedPath()+"&sig=AAAA&se=99999999999")
		}
		w := httptest.NewRecorder()
		a.Handler.ServeHTTP(w, r)
		res := w.Result()
		out, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q (cred %d, body %q): HTTP %d %s", r.Method, target, cred%5, b, res.StatusCode, out)
		}
		if res.StatusCode < 200 {
			t.Fatalf("%s %q: HTTP %d", r.Method, target, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Fatalf("%s %q: HTTP %d, Content-Type %q", r.Method, target, res.StatusCode, ct)
		}
		if res.Header.Get("x-ms-request-id") == "" {
			t.Fatalf("%s %q: no x-ms-request-id", r.Method, target)
		}
		if !json.Valid(out) {
			t.Fatalf("%s %q: HTTP %d, body is not JSON: %q", r.Method, target, res.StatusCode, out)
		}
		if res.StatusCode >= 300 {
			var e dps.ErrorDetails
			if err := json.Unmarshal(out, &e); err != nil || e.ErrorCode/1000 != res.StatusCode || e.Message == "" {
				t.Fatalf("%s %q: HTTP %d, error body %s", r.Method, target, res.StatusCode, out)
			}
			if got := res.Header.Get("x-ms-error-code"); got != strconv.Itoa(e.ErrorCode) {
				t.Fatalf("%s %q: x-ms-error-code %q, errorCode %d", r.Method, target, got, e.ErrorCode)
			}
			return
		}
		var op map[string]any
		if err := json.Unmarshal(out, &op); err != nil {
			t.Fatalf("%s %q: %v", r.Method, target, err)
		}
		if st, _ := op["status"].(string); st != "" {
			switch st {
			case dps.StatusAssigning, dps.StatusAssigned, dps.StatusFailed, dps.StatusDisabled:
			default:
				t.Fatalf("%s %q: status %q outside the closed set", r.Method, target, st)
			}
		}
	})
}
