package console_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/console"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestSessions: sign-in with a connection string or a policy's name and
// key, checked as the service API checks a token; the session cookie is
// Secure, HttpOnly, SameSite=Strict and holds no key; a damaged, expired or
// revoked session ends with the API's reason.
func TestSessions(t *testing.T) {
	h := newHarness(t)
	key := h.ownerKey()

	t.Run("without a session every page asks to sign in", func(t *testing.T) {
		b := h.browser()
		for _, path := range []string{"/console/", "/console/enrollments", "/console/refusals", "/console/certificates/x"} {
			b.get(path).want(t, http.StatusUnauthorized, `action="/console/signin"`)
		}
		b.get("/console").want(t, http.StatusSeeOther)
	})

	t.Run("connection string", func(t *testing.T) {
		b := h.browser()
		form := b.get("/console/signin").want(t, http.StatusOK)
		cs := "HostName=" + h.Host + ";SharedAccessKeyName=" + dps.OwnerPolicyName + ";SharedAccessKey=" + key
		p := b.post("/console/signin", form.csrf(t), url.Values{"connectionString": {cs}})
		if p.Status != http.StatusSeeOther || p.Header.Get("Location") != "/console/" {
			t.Fatalf("sign in: %d %s", p.Status, p.Header.Get("Location"))
		}
		var session *http.Cookie
		for _, c := range (&http.Response{Header: p.Header}).Cookies() {
			if c.Name == "__Host-dpsd-console" {
				session = c
			}
		}
		if session == nil {
			t.Fatalf("no session cookie in %q", p.Header.Values("Set-Cookie"))
		}
		if !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" || session.MaxAge <= 0 {
			t.Errorf("session cookie %+v, want Secure, HttpOnly, SameSite=Strict, Path=/, a Max-Age", session)
		}
		raw, _ := base64.RawURLEncoding.DecodeString(session.Value)
		for _, v := range []string{session.Value, string(raw)} {
			if strings.Contains(v, key) || strings.Contains(v, strings.TrimRight(key, "=")) {
				t.Errorf("the session cookie holds the policy key")
			}
		}
		if loc := p.Header.Get("Location"); strings.Contains(loc, key) {
			t.Errorf("the redirect %q holds the key", loc)
		}
		b.get("/console/").want(t, http.StatusOK, h.Scope, dps.OwnerPolicyName)
		// Sign out ends it.
		ov := b.get("/console/")
		b.post("/console/signout", ov.csrf(t), nil).want(t, http.StatusSeeOther)
		b.get("/console/").want(t, http.StatusUnauthorized)
	})

	t.Run("refusals say why, as the API does", func(t *testing.T) {
		b := h.browser()
		for _, tc := range []struct {
			form url.Values
			want string
		}{
			{url.Values{"policy": {dps.OwnerPolicyName}, "key": {base64.StdEncoding.EncodeToString([]byte("not the key of the owner policy"))}}, `the SAS token signature does not match a key of shared access policy "provisioningserviceowner"`},
			{url.Values{"policy": {"nobody"}, "key": {key}}, `the SAS token names shared access policy "nobody", which does not exist`},
			{url.Values{"policy": {dps.OwnerPolicyName}, "key": {"!!"}}, "the key is not base64"},
			{url.Values{"connectionString": {"HostName=x;SharedAccessKey=" + key}}, "needs SharedAccessKeyName and SharedAccessKey"},
			{url.Values{}, "give a service connection string, or a policy name and its key"},
		} {
			form := b.get("/console/signin")
			p := b.post("/console/signin", form.csrf(t), tc.form)
			p.want(t, http.StatusUnauthorized, tc.want)
			if strings.Contains(p.Body, key) || p.Header.Get("Set-Cookie") != "" && strings.Contains(p.Header.Get("Set-Cookie"), "__Host-dpsd-console=") && !strings.Contains(p.Header.Get("Set-Cookie"), "Max-Age=0") {
				t.Errorf("a refused sign-in set a session or echoed the key: %q", p.Header.Values("Set-Cookie"))
			}
		}
	})

	t.Run("a damaged, expired or revoked session ends", func(t *testing.T) {
		b := h.browser()
		b.signIn(t, dps.OwnerPolicyName, key)
		u, _ := url.Parse(h.URL)
		good := b.jar.Cookies(u)
		// Damaged: another signature.
		for _, c := range good {
			if c.Name == "__Host-dpsd-console" {
				raw, _ := base64.RawURLEncoding.DecodeString(c.Value)
				forged := regexp.MustCompile(`sig=[^&]+`).ReplaceAllString(string(raw), "sig=AAAA")
				b.jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Value: base64.RawURLEncoding.EncodeToString([]byte(forged)), Path: "/", Secure: true}})
			}
		}
		b.get("/console/").want(t, http.StatusUnauthorized, "Your session ended: the SAS token signature does not match")

		// Expired: signed in eight hours and a minute ago.
		b.signIn(t, dps.OwnerPolicyName, key)
		h.setClock(time.Now().Add(console.DefaultSessionTTL + time.Minute))
		b.get("/console/").want(t, http.StatusUnauthorized, "Your session ended: the SAS token expired at")
		h.setClock(time.Time{})

		// Revoked: the policy's key changed.
		b.signIn(t, "rotating", h.policy("rotating", dps.RightEnrollmentRead))
		h.policy("rotating", dps.RightEnrollmentRead)
		b.get("/console/enrollments").want(t, http.StatusUnauthorized, "Your session ended")
	})
}

// TestCSRF: a form without the page's token, with another session's
// token, or from another origin changes nothing; the sign-in form has a
// token of its own.
func TestCSRF(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	ov := b.signIn(t, dps.OwnerPolicyName, h.ownerKey())
	other := h.browser().signIn(t, "other", h.policy("other", dps.AllRights...))
	form := url.Values{"id": {"dev-csrf"}, "attestation": {"symmetricKey"}}
	b.post("/console/enrollments", "", form).want(t, http.StatusForbidden, "CSRF")
	b.post("/console/enrollments", other.csrf(t), form).want(t, http.StatusForbidden, "CSRF")
	req, _ := http.NewRequest(http.MethodPost, h.URL+"/console/enrollments", strings.NewReader(url.Values{"id": {"dev-csrf"}, "attestation": {"symmetricKey"}, "csrf": {ov.csrf(t)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	b.do(req).want(t, http.StatusForbidden, "CSRF")
	if _, err := h.Store.Enrollment(context.Background(), "dev-csrf"); err == nil {
		t.Fatal("a forged form created an enrollment")
	}
	b.post("/console/signout", "", nil).want(t, http.StatusForbidden)
	b.get("/console/").want(t, http.StatusOK)

	// Sign-in: the token of the form's own cookie, nothing else.
	nb := h.browser()
	nb.post("/console/signin", "", url.Values{"policy": {dps.OwnerPolicyName}, "key": {h.ownerKey()}}).want(t, http.StatusForbidden, "CSRF")
	nb.post("/console/signin", ov.csrf(t), url.Values{"policy": {dps.OwnerPolicyName}, "key": {h.ownerKey()}}).want(t, http.StatusForbidden, "CSRF")
	nb.get("/console/").want(t, http.StatusUnauthorized)

	// With the token, the same form goes through.
	b.post("/console/enrollments", ov.csrf(t), form).want(t, http.StatusSeeOther)
	if _, err := h.Store.Enrollment(context.Background(), "dev-csrf"); err != nil {
		t.Fatalf("the form did not create the enrollment: %v", err)
	}
}

// TestRights: a policy with the read rights alone sees every page and is
// refused every write by the service API, with its message; nothing
// changes.
func TestRights(t *testing.T) {
	h := newHarness(t)
	owner := h.browser()
	ov := owner.signIn(t, dps.OwnerPolicyName, h.ownerKey())
	csrf := ov.csrf(t)
	owner.post("/console/enrollments", csrf, url.Values{"id": {"dev-1"}, "attestation": {"symmetricKey"}}).want(t, http.StatusSeeOther)
	owner.post("/console/groups", csrf, url.Values{"id": {"grp-1"}, "attestation": {"symmetricKey"}}).want(t, http.StatusSeeOther)
	root := testutil.NewRoot(t, pki.Options{CommonName: "Rights Root"})
	owner.postFile("/console/certificates", csrf, url.Values{"name": {"root"}}, "certificateFile", string(pki.EncodePEM(root.Cert))).want(t, http.StatusSeeOther)

	reader := h.browser()
	rp := reader.signIn(t, "reader", h.policy("reader", dps.RightEnrollmentRead, dps.RightRegistrationStatusRead))
	rc := rp.csrf(t)
	for _, path := range []string{"/console/enrollments", "/console/enrollments/dev-1", "/console/groups/grp-1", "/console/refusals", "/console/registrations"} {
		reader.get(path).want(t, http.StatusOK)
	}
	for _, tc := range []struct {
		path  string
		form  url.Values
		right string
	}{
		{"/console/enrollments", url.Values{"id": {"dev-2"}, "attestation": {"symmetricKey"}}, "EnrollmentWrite"},
		{"/console/enrollments/dev-1", url.Values{"attestation": {"symmetricKey"}, "provisioningStatus": {"disabled"}}, "EnrollmentWrite"},
		{"/console/enrollments/dev-1/disable", nil, "EnrollmentWrite"},
		{"/console/enrollments/dev-1/delete", nil, "EnrollmentWrite"},
		{"/console/groups/grp-1/delete", nil, "EnrollmentWrite"},
		{"/console/certificates", url.Values{"name": {"root-2"}, "certificate": {string(pki.EncodePEM(root.Cert))}}, "ServiceConfig"},
		{"/console/certificates/root/code", nil, "ServiceConfig"},
		{"/console/certificates/root/verify", url.Values{"certificate": {"x"}}, "ServiceConfig"},
		{"/console/certificates/root/delete", nil, "ServiceConfig"},
		{"/console/registrations/dev-1/delete", nil, "RegistrationStatusWrite"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			before := snapshot(t, h)
			reader.post(tc.path, rc, tc.form).want(t, http.StatusUnauthorized, `shared access policy "reader" does not grant `+tc.right)
			if after := snapshot(t, h); after != before {
				t.Errorf("a refused write changed the store:\n%s\n%s", before, after)
			}
		})
	}
	// Revealing keys is a read: the attestation mechanism call, which the
	// API grants with EnrollmentRead.
	reader.post("/console/enrollments/dev-1/keys", rc, nil).want(t, http.StatusOK, "revealed-keys")
}

// snapshot is the enrollments, groups and CA certificates, for "nothing
// changed".
func snapshot(t *testing.T, h *harness) string {
	t.Helper()
	cas, err := h.Store.CACertificates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return testutil.JSON(t, []any{testutil.All(t, h.Store.Enrollments), testutil.All(t, h.Store.Groups), cas})
}

// TestContentSecurityPolicy: every page carries the strict policy and the
// other security headers, and none has inline script, inline style or an
// event handler attribute (the policy would block them).
func TestContentSecurityPolicy(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	pages := map[string]*page{"signin": b.get("/console/signin")}
	ov := b.signIn(t, dps.OwnerPolicyName, h.ownerKey())
	csrf := ov.csrf(t)
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev-1"}, "attestation": {"symmetricKey"}}).want(t, http.StatusSeeOther)
	for _, path := range []string{"/console/", "/console/enrollments", "/console/enrollments/new", "/console/enrollments/dev-1", "/console/groups",
		"/console/certificates", "/console/registrations", "/console/registrations?group=g", "/console/refusals", "/console/nowhere", "/console/assets/console.css", "/console/assets/console.js"} {
		pages[path] = b.get(path)
	}
	pages["refused post"] = b.post("/console/enrollments", csrf, url.Values{"id": {"bad id"}, "attestation": {"symmetricKey"}})
	pages["stats"] = b.get("/console/stats")
	inline := regexp.MustCompile(`(?i)\sstyle=|\son[a-z]+=|javascript:`)
	scripts := regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`)
	for name, p := range pages {
		hd := p.Header
		if got := hd.Get("Content-Security-Policy"); got != console.ContentSecurityPolicy {
			t.Errorf("%s: Content-Security-Policy %q", name, got)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"} {
			if got := hd.Get(k); got != want && !(k == "Cache-Control" && strings.Contains(name, "assets")) {
				t.Errorf("%s: %s = %q, want %q", name, k, got, want)
			}
		}
		if strings.HasPrefix(hd.Get("Content-Type"), "text/html") {
			if m := inline.FindString(p.Raw); m != "" {
				t.Errorf("%s: inline style or handler %q", name, m)
			}
			for _, m := range scripts.FindAllStringSubmatch(p.Raw, -1) {
				if !strings.Contains(m[1], `src="/console/assets/`) || strings.TrimSpace(m[2]) != "" {
					t.Errorf("%s: inline script %q", name, m[0])
				}
			}
		}
	}
	for _, c := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(console.ContentSecurityPolicy, c) {
			t.Errorf("the policy lacks %s", c)
		}
	}
}

// TestKeysShownOnlyOnRequest: an enrollment's keys are on no page until
// the user asks to reveal them, and then on that answer only.
func TestKeysShownOnlyOnRequest(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	csrf := b.signIn(t, dps.OwnerPolicyName, h.ownerKey()).csrf(t)
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev-1"}, "attestation": {"symmetricKey"}}).want(t, http.StatusSeeOther)
	b.post("/console/groups", csrf, url.Values{"id": {"grp-1"}, "attestation": {"symmetricKey"}}).want(t, http.StatusSeeOther)
	e, err := h.Store.Enrollment(context.Background(), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	g, err := h.Store.Group(context.Background(), "grp-1")
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{e.Attestation.SymmetricKey.PrimaryKey, e.Attestation.SymmetricKey.SecondaryKey, g.Attestation.SymmetricKey.PrimaryKey, h.ownerKey()}
	for _, path := range []string{"/console/", "/console/enrollments", "/console/enrollments/dev-1", "/console/enrollments/dev-1?done=created", "/console/groups", "/console/groups/grp-1"} {
		p := b.get(path).want(t, http.StatusOK)
		for _, k := range keys {
			if strings.Contains(p.Body, k) {
				t.Errorf("%s shows a key", path)
			}
		}
	}
	b.post("/console/enrollments/dev-1/keys", csrf, nil).want(t, http.StatusOK, "revealed-keys", keys[0], keys[1])
	b.post("/console/groups/grp-1/keys", csrf, nil).want(t, http.StatusOK, keys[2])
	// Editing without touching the keys keeps them.
	b.post("/console/enrollments/dev-1", csrf, url.Values{"attestation": {"symmetricKey"}, "provisioningStatus": {"disabled"}, "iotHubs": {"hub-a.example.net"}}).want(t, http.StatusSeeOther)
	e2, _ := h.Store.Enrollment(context.Background(), "dev-1")
	if e2.Attestation.SymmetricKey.PrimaryKey != keys[0] || e2.ProvisioningStatus != dps.ProvisioningDisabled || len(e2.IotHubs) != 1 {
		t.Errorf("after the edit: %+v", e2)
	}
}
