package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
)

// maxFormBytes bounds a form post: a certificate or two, and a twin.
const maxFormBytes = 512 << 10

// view is what every page template receives.
type view struct {
	Title   string
	Nav     string
	Session *session
	CSRF    string
	// Error is the service API's refusal (or another failure) to show.
	Error *apiError
	// Notice is the outcome of the last action, from a fixed list.
	Notice string
	Data   any
}

// notices are the outcomes a redirect may name (?done=).
var notices = map[string]string{
	"created": "Created.", "updated": "Saved.", "deleted": "Deleted.", "enabled": "Enabled.", "disabled": "Disabled.",
	"uploaded": "Uploaded.", "verified": "Verified: the CA certificate is now verified.", "signedout": "Signed out.",
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w.Header())
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	switch {
	case rest == "":
		http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
		return
	case strings.HasPrefix(rest, "/assets/"):
		w.Header().Set("Cache-Control", "no-cache")
		c.assets.ServeHTTP(w, r)
		return
	case rest == "/signin":
		c.signinPage(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		c.fail(w, r, nil, http.StatusMethodNotAllowed, "method %s is not allowed here", r.Method)
		return
	}
	s, err := c.session(r)
	if s == nil {
		c.showSignin(w, r, err, http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost {
		if err := c.parseForm(w, r); err != nil {
			c.fail(w, r, s, http.StatusBadRequest, "%v", err)
			return
		}
		if !sameOrigin(r) || !checkCSRF(r, s.csrf) {
			c.fail(w, r, s, http.StatusForbidden, "the form did not come from this console (missing or wrong CSRF token); reload the page and try again")
			return
		}
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	for i, sg := range segs {
		if u, err := url.PathUnescape(sg); err == nil {
			segs[i] = u
		}
	}
	switch segs[0] {
	case "":
		c.overview(w, r, s)
	case "stats":
		c.stats(w, r)
	case "signout":
		if r.Method != http.MethodPost {
			c.fail(w, r, s, http.StatusMethodNotAllowed, "sign out with the button")
			return
		}
		clearCookie(w, sessionCookie)
		http.Redirect(w, r, Prefix+"/signin?done=signedout", http.StatusSeeOther)
	case "enrollments":
		c.enrollments(w, r, s, individualKind, segs[1:])
	case "groups":
		c.enrollments(w, r, s, groupKind, segs[1:])
	case "certificates":
		c.certificates(w, r, s, segs[1:])
	case "registrations":
		c.registrations(w, r, s, segs[1:])
	case "refusals":
		c.refusals(w, r, s)
	default:
		c.fail(w, r, s, http.StatusNotFound, "no console page at %s", r.URL.Path)
	}
}

// parseForm reads a POST body, URL-encoded or multipart (file uploads),
// capped at maxFormBytes.
func (c *Console) parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	if ct == "multipart/form-data" {
		err = r.ParseMultipartForm(maxFormBytes)
	} else {
		err = r.ParseForm()
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return fmt.Errorf("the form is larger than %d KB", maxFormBytes>>10)
	}
	if err != nil {
		return fmt.Errorf("the form could not be read: %v", err)
	}
	return nil
}

// formText is a form field, or the content of the file field fileName
// when one was uploaded.
func formText(r *http.Request, name, fileName string) (string, error) {
	if r.MultipartForm != nil {
		if fs := r.MultipartForm.File[fileName]; len(fs) > 0 && fs[0].Size > 0 {
			f, err := fs[0].Open()
			if err != nil {
				return "", err
			}
			defer f.Close()
			b, err := io.ReadAll(io.LimitReader(f, maxFormBytes))
			return string(b), err
		}
	}
	return strings.TrimSpace(r.PostFormValue(name)), nil
}

// render writes a page.
func (c *Console) render(w http.ResponseWriter, status int, name string, v *view) {
	t, ok := c.pages[name]
	if !ok {
		panic("console: no page " + name)
	}
	if v.Session != nil {
		v.CSRF = v.Session.csrf
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout", v); err != nil {
		c.Log.Error("console: rendering a page", "page", name, "err", err)
	}
}

// fail renders an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, status int, format string, args ...any) {
	c.render(w, status, "error", &view{Title: "Error", Session: s, Error: &apiError{Status: status, Message: fmt.Sprintf(format, args...)}})
}

// asAPIError is err as the API's refusal, with the API's status; any other
// error is the console's own, a 500.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return &apiError{Status: http.StatusInternalServerError, Message: err.Error()}
}

func notice(r *http.Request) string { return notices[r.URL.Query().Get("done")] }

// seeOther redirects after a successful action to path?done=what.
func seeOther(w http.ResponseWriter, r *http.Request, path, what string) {
	http.Redirect(w, r, Prefix+path+"?done="+what, http.StatusSeeOther)
}

// ---- sign in ----

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		c.showSignin(w, r, nil, http.StatusOK)
	case http.MethodPost:
		c.doSignin(w, r)
	default:
		c.fail(w, r, nil, http.StatusMethodNotAllowed, "method %s is not allowed here", r.Method)
	}
}

// showSignin renders the sign-in form with a new nonce (its CSRF token).
func (c *Console) showSignin(w http.ResponseWriter, r *http.Request, reason error, status int) {
	nonce := newNonce()
	setCookie(w, signinCookie, nonce, time.Hour)
	v := &view{Title: "Sign in", CSRF: csrfOf(nonce), Notice: notice(r)}
	if reason != nil {
		clearCookie(w, sessionCookie)
		v.Error = asAPIError(reason)
		v.Error.Message = "Your session ended: " + v.Error.Message
	}
	c.render(w, status, "signin", v)
}

func (c *Console) doSignin(w http.ResponseWriter, r *http.Request) {
	if err := c.parseForm(w, r); err != nil {
		c.showSignin(w, r, nil, http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || !sameOrigin(r) || !checkCSRF(r, csrfOf(ck.Value)) {
		v := &view{Title: "Sign in", Error: &apiError{Status: http.StatusForbidden, Message: "the sign-in form did not come from this console (missing or wrong CSRF token); try again"}}
		nonce := newNonce()
		setCookie(w, signinCookie, nonce, time.Hour)
		v.CSRF = csrfOf(nonce)
		c.render(w, http.StatusForbidden, "signin", v)
		return
	}
	policy, key, err := credentials(r)
	if err == nil {
		var value string
		if value, _, err = c.signIn(r, policy, key); err == nil {
			clearCookie(w, signinCookie)
			setCookie(w, sessionCookie, value, c.SessionTTL)
			http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
			return
		}
	}
	nonce := newNonce()
	setCookie(w, signinCookie, nonce, time.Hour)
	e := asAPIError(err)
	if e.Status == http.StatusInternalServerError {
		e.Status = http.StatusUnauthorized
	}
	c.render(w, e.Status, "signin", &view{Title: "Sign in", CSRF: csrfOf(nonce), Error: e})
}

// credentials reads the sign-in form: a service connection string, or a
// policy name and key.
func credentials(r *http.Request) (string, []byte, error) {
	policy, key := strings.TrimSpace(r.PostFormValue("policy")), strings.TrimSpace(r.PostFormValue("key"))
	if cs := strings.TrimSpace(r.PostFormValue("connectionString")); cs != "" {
		parsed, err := sas.ParseConnectionString(cs)
		if err != nil {
			return "", nil, fmt.Errorf("the connection string: %v", err)
		}
		policy, key = parsed.SharedAccessKeyName, parsed.SharedAccessKey
		if policy == "" || key == "" {
			return "", nil, errors.New("the connection string needs SharedAccessKeyName and SharedAccessKey")
		}
	}
	if policy == "" || key == "" {
		return "", nil, errors.New("give a service connection string, or a policy name and its key")
	}
	k, err := sas.DecodeKey(key)
	if err != nil {
		return "", nil, errors.New("the key is not base64")
	}
	return policy, k, nil
}

// ---- overview ----

type overviewData struct {
	Instance
	RegistrationRate, RefusalRate string
	Hubs                          []dps.LinkedHub
	HubsError                     *apiError
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, s *session) {
	d := overviewData{RegistrationRate: "…", RefusalRate: "…"}
	if c.Instance != nil {
		d.Instance = c.Instance()
	}
	if reg, ref, ok := c.currentRates(); ok {
		d.RegistrationRate, d.RefusalRate = fmt.Sprintf("%.1f", reg), fmt.Sprintf("%.1f", ref)
	}
	var hubs dps.LinkedHubList
	if _, err := c.call(r, s, http.MethodGet, "/linkedHubs", nil, nil, &hubs); err != nil {
		d.HubsError = asAPIError(err)
	}
	d.Hubs = hubs.Value
	c.render(w, http.StatusOK, "overview", &view{Title: "Overview", Nav: "overview", Session: s, Notice: notice(r), Data: d})
}

// currentRates samples the counters; ok is false until an earlier sample
// gives a rate.
func (c *Console) currentRates() (float64, float64, bool) {
	if c.Counters == nil {
		return 0, 0, false
	}
	reg, ref := c.Counters()
	return c.rates.observe(c.Now(), reg, ref)
}

// stats answers the overview's script: the live rates, as JSON.
func (c *Console) stats(w http.ResponseWriter, _ *http.Request) {
	reg, ref, ok := c.currentRates()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"registrationsPerSecond": reg, "refusalsPerSecond": ref, "measured": ok})
}

// ---- refusal journal ----

type refusalsData struct {
	RegistrationID, ErrorCode, Since, Until string
	Items                                   []dps.Refusal
	Next                                    template.URL // the next page
}

// journalPageSize is how many entries one page shows.
const journalPageSize = 50

func (c *Console) refusals(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := refusalsData{RegistrationID: q.Get("registrationId"), ErrorCode: q.Get("errorCode"), Since: q.Get("since"), Until: q.Get("until")}
	api := url.Values{}
	for _, f := range []struct{ name, v string }{{"registrationId", d.RegistrationID}, {"errorCode", d.ErrorCode}, {"since", formTime(d.Since)}, {"until", formTime(d.Until)}} {
		if strings.TrimSpace(f.v) != "" {
			api.Set(f.name, strings.TrimSpace(f.v))
		}
	}
	h := http.Header{"X-Ms-Max-Item-Count": {fmt.Sprint(journalPageSize)}}
	if n := q.Get("next"); n != "" {
		h.Set("X-Ms-Continuation", n)
	}
	v := &view{Title: "Refusal journal", Nav: "refusals", Session: s, Data: &d}
	hdr, err := c.call(r, s, http.MethodGet, "/refusals?"+api.Encode(), h, nil, &d.Items)
	if err != nil {
		v.Error = asAPIError(err)
		c.render(w, v.Error.Status, "refusals", v)
		return
	}
	if next := hdr.Get("x-ms-continuation"); next != "" {
		nq := url.Values{}
		for k, vs := range q {
			if k != "next" {
				nq[k] = vs
			}
		}
		nq.Set("next", next)
		d.Next = template.URL(Prefix + "/refusals?" + nq.Encode()) // built here, escaped by Encode
	}
	c.render(w, http.StatusOK, "refusals", v)
}

// formTime turns what a datetime-local input sends (2025-01-31T12:00, no
// zone) into an RFC 3339 time in UTC; anything else goes to the API as
// typed, which explains what it cannot read.
func formTime(v string) string {
	v = strings.TrimSpace(v)
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC().Format(time.RFC3339)
		}
	}
	return v
}

// ---- templates ----

var funcs = template.FuncMap{
	"join": func(v []string) string { return strings.Join(v, ", ") },
	"time": func(t *dps.Time) string {
		if t == nil || t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"json": func(v any) string {
		if raw, ok := v.(json.RawMessage); ok && len(raw) == 0 {
			return ""
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		if string(b) == "null" {
			return ""
		}
		return string(b)
	},
	"esc": url.PathEscape,
}

func parseTemplates() map[string]*template.Template {
	pages := map[string]*template.Template{}
	entries, err := templateFiles.ReadDir("templates")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".html")
		if name == "layout" {
			continue
		}
		pages[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+e.Name()))
	}
	return pages
}
