// Package console serves the web console at /console on the service
// listener: server-rendered pages (html/template) over the service API, for
// operators who would rather click than type.
//
// The console holds no rules of its own. Every read and write is a request
// to the service API handler, in process, authorized by a SAS token of the
// signed-in policy: the same validation, the same rights, the same
// messages as the API. The session is that token, in a Secure, HttpOnly,
// SameSite=Strict cookie, so that any node of a cluster serves any page;
// the policy's key itself is never stored, and never in a URL.
//
// Every form carries a CSRF token derived from the session (the sign-in
// form: from a cookie of its own), every POST must come from the console's
// own origin, and every answer carries a strict Content-Security-Policy:
// no inline script, no other origin. Assets are embedded; nothing is
// fetched from elsewhere, so the console works air-gapped. Keys are shown
// only on the page that answers an explicit "reveal keys".
package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// Prefix is the path the console is served under.
const Prefix = "/console"

// Cookies. The __Host- prefix makes browsers refuse them unless Secure,
// for this host only, with Path=/.
const (
	sessionCookie = "__Host-dpsd-console"
	signinCookie  = "__Host-dpsd-console-signin"
	// csrfField is the hidden field of every form.
	csrfField = "csrf"
)

// DefaultSessionTTL is how long a sign-in lasts: a working day. The
// session cannot outlive the policy's key: changing the key ends it.
const DefaultSessionTTL = 8 * time.Hour

// ContentSecurityPolicy is sent with every answer: scripts, styles and
// images from the console alone, no inline script, no frames, forms that
// post only to the console.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Instance is what the overview shows of the instance (no secret).
type Instance struct {
	IDScope                                       string
	DeviceEndpoint, ServiceEndpoint, MQTTEndpoint string
}

// Config is what a console serves from.
type Config struct {
	// API is the service API handler as the listener serves it.
	API http.Handler
	// Authenticate checks a request's SAS token as the service API does
	// and returns the policy it names.
	Authenticate func(*http.Request) (*store.Policy, error)
	// Instance describes the instance for the overview.
	Instance func() Instance
	// Counters returns the totals of registrations and of refusals this
	// node decided, for the live rates.
	Counters   func() (registrations, refusals float64)
	Log        *slog.Logger
	SessionTTL time.Duration    // 0: DefaultSessionTTL
	Now        func() time.Time // nil: time.Now
}

// Console serves /console. Make one with New.
type Console struct {
	Config
	pages  map[string]*template.Template
	assets http.Handler
	rates  rates
}

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed assets
var assetFiles embed.FS

// New returns a console over c.
func New(c Config) *Console {
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	sub, err := fs.Sub(assetFiles, "assets")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return &Console{
		Config: c,
		pages:  parseTemplates(),
		assets: http.StripPrefix(Prefix+"/assets/", http.FileServerFS(sub)),
	}
}

// session is a signed-in policy: its name and rights, and the SAS token
// every API call carries.
type session struct {
	Policy string
	Rights []string
	token  string
	csrf   string
}

// securityHeaders are sent with every answer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// Not no-referrer: with it browsers send "Origin: null" on form posts,
	// which the origin check must refuse. Other sites learn nothing.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// signIn checks a policy name and key as the service API would check a
// token they sign, and returns the session cookie's value. The token names
// the instance's service endpoint, as configured: the service API accepts
// no other audience, whatever Host the browser sent.
func (c *Console) signIn(r *http.Request, policy string, key []byte) (string, *session, error) {
	tok := sas.New(c.Instance().ServiceEndpoint, policy, key, c.Now().Add(c.SessionTTL), true)
	s, err := c.check(r, tok)
	if err != nil {
		return "", nil, err
	}
	return base64.RawURLEncoding.EncodeToString([]byte(tok)), s, nil
}

// session returns the request's session, or the API's reason why it has
// none (nil error and nil session: no cookie at all).
func (c *Console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	tok, err := base64.RawURLEncoding.DecodeString(ck.Value)
	if err != nil {
		return nil, errors.New("the session cookie is damaged; sign in again")
	}
	return c.check(r, string(tok))
}

// check authenticates a token as the service API does.
func (c *Console) check(r *http.Request, tok string) (*session, error) {
	req := r.Clone(r.Context())
	req.Header = http.Header{"Authorization": {tok}}
	p, err := c.Authenticate(req)
	if err != nil {
		return nil, err
	}
	return &session{Policy: p.Name, Rights: append([]string(nil), p.Rights...), token: tok, csrf: csrfOf(tok)}, nil
}

// csrfOf is the CSRF token of a secret: a MAC of it, which a page can
// carry without giving the secret away.
func csrfOf(secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("dpsd console form"))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sameOrigin reports whether a POST comes from the console's own pages:
// browsers send Origin with every POST; a request without one is not from
// a browser form on another site.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	return o == "" || o == "https://"+r.Host
}

// checkCSRF compares the form's token with want in constant time.
func checkCSRF(r *http.Request, want string) bool {
	got := r.PostFormValue(csrfField)
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

func clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// newNonce returns 128 random bits, base64url.
func newNonce() string {
	var b [16]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// rates turns the counters into per-second rates over the last few
// seconds, from samples taken whenever a page asks.
type rates struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at            time.Time
	registrations float64
	refusals      float64
}

// rateWindow is how far back a rate looks.
const rateWindow = 10 * time.Second

// observe records the counters at now and returns the rates since the
// oldest sample of the window; ok is false while there is none old enough.
func (rt *rates) observe(now time.Time, registrations, refusals float64) (reg, ref float64, ok bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	keep := rt.samples[:0]
	for _, s := range rt.samples {
		if now.Sub(s.at) <= rateWindow {
			keep = append(keep, s)
		}
	}
	rt.samples = append(keep, sample{now, registrations, refusals})
	first := rt.samples[0]
	dt := now.Sub(first.at).Seconds()
	if dt < 0.5 {
		return 0, 0, false
	}
	return (registrations - first.registrations) / dt, (refusals - first.refusals) / dt, true
}
