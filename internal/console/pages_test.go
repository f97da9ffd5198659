package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestProofOfPossession: upload a CA certificate as a file, generate a
// verification code, and verify it with a certificate the CA signed; a
// certificate of another CA is refused with the API's message.
func TestProofOfPossession(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	csrf := b.signIn(t, dps.OwnerPolicyName, h.ownerKey()).csrf(t)
	root := testutil.NewRoot(t, pki.Options{CommonName: "PoP Root"})
	b.postFile("/console/certificates", csrf, url.Values{"name": {"pop-root"}}, "certificateFile", string(pki.EncodePEM(root.Cert))).
		want(t, http.StatusSeeOther)
	b.get("/console/certificates/pop-root").want(t, http.StatusOK, "not verified", pki.SHA256Thumbprint(root.Cert))
	p := b.post("/console/certificates/pop-root/code", csrf, nil).want(t, http.StatusOK, "verification-code")
	code := regexp.MustCompile(`id="verification-code">([0-9A-F]+)<`).FindStringSubmatch(p.Body)
	if code == nil {
		t.Fatalf("no verification code on the page:\n%s", p.Body)
	}
	other := testutil.NewRoot(t, pki.Options{CommonName: "Other Root"})
	forged, _ := other.Leaf(t, pki.Options{CommonName: code[1]})
	b.postFile("/console/certificates/pop-root/verify", csrf, url.Values{}, "certificateFile", string(pki.EncodePEM(forged))).
		want(t, http.StatusBadRequest, `proof of possession failed for CA certificate "pop-root"`)
	proof, _ := root.Leaf(t, pki.Options{CommonName: code[1]})
	b.post("/console/certificates/pop-root/verify", csrf, url.Values{"certificate": {string(pki.EncodePEM(proof))}}).want(t, http.StatusSeeOther)
	b.get("/console/certificates/pop-root?done=verified").want(t, http.StatusOK, "Verified: the CA certificate is now verified.")
	if c, err := h.Store.CACertificate(context.Background(), "pop-root"); err != nil || !c.IsVerified {
		t.Fatalf("the CA certificate after verify: %+v, %v", c, err)
	}
}

// TestStaleEdit: an edit made from a page shown before someone else
// changed the record is refused by the API's etag check, and changes
// nothing.
func TestStaleEdit(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	csrf := b.signIn(t, dps.OwnerPolicyName, h.ownerKey()).csrf(t)
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev-1"}, "attestation": {"symmetricKey"}}).want(t, http.StatusSeeOther)
	shown := b.get("/console/enrollments/dev-1").want(t, http.StatusOK)
	etag := regexp.MustCompile(`name="etag" value="([^"]+)"`).FindStringSubmatch(shown.Raw)
	if etag == nil {
		t.Fatal("the edit form carries no etag")
	}
	e, _ := h.Store.Enrollment(context.Background(), "dev-1")
	e.DeviceID = "changed-meanwhile"
	if _, err := h.Store.PutEnrollment(context.Background(), e, "*"); err != nil {
		t.Fatal(err)
	}
	b.post("/console/enrollments/dev-1", csrf, url.Values{"etag": {etag[1]}, "attestation": {"symmetricKey"}, "deviceId": {"mine"}}).
		want(t, http.StatusPreconditionFailed, "the If-Match etag does not match enrollment")
	if e, _ := h.Store.Enrollment(context.Background(), "dev-1"); e.DeviceID != "changed-meanwhile" {
		t.Fatalf("a stale edit was written: deviceId %q", e.DeviceID)
	}
	// The API's validation and messages, unchanged.
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev 2"}, "attestation": {"symmetricKey"}}).
		want(t, http.StatusBadRequest, "only letters, digits and - . _ : are allowed")
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev-3"}, "attestation": {"symmetricKey"}, "primaryKey": {"abc"}}).
		want(t, http.StatusBadRequest, "symmetricKey.primaryKey is not valid base64")
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev-4"}, "attestation": {"symmetricKey"}, "tags": {"{"}}).
		want(t, http.StatusBadRequest, "the initial twin tags are not JSON")
	b.post("/console/enrollments", csrf, url.Values{"id": {"dev-5"}, "attestation": {"symmetricKey"}, "reprovision": {"sometimes"}}).
		want(t, http.StatusBadRequest, `reprovisioning "sometimes" is not reprovisionandmigratedata, reprovisionandresetdata or never`)
	if _, err := h.Store.Enrollment(context.Background(), "dev-5"); err == nil {
		t.Fatal("an enrollment with an unknown reprovisioning was created")
	}
	// Each policy the form offers is written as it says, and shown again.
	for name, want := range dps.ReprovisionPolicies {
		b.post("/console/enrollments", csrf, url.Values{"id": {"dev-" + name}, "attestation": {"symmetricKey"}, "reprovision": {name}}).want(t, http.StatusSeeOther)
		e, err := h.Store.Enrollment(context.Background(), "dev-"+name)
		if err != nil || e.ReprovisionPolicy == nil || *e.ReprovisionPolicy != want {
			t.Fatalf("reprovisioning %s stored as %+v, %v", name, e, err)
		}
		b.get("/console/enrollments/dev-"+name).want(t, http.StatusOK, `<option value="`+name+`" selected>`)
	}
}

// TestJournalPage: the journal page lists the entries the filters select,
// and shows the API's refusal of a filter it cannot read.
func TestJournalPage(t *testing.T) {
	h := newHarness(t)
	b := h.browser()
	b.signIn(t, "reader", h.policy("reader", dps.RightEnrollmentRead))
	at := time.Date(2025, 5, 6, 7, 8, 0, 0, time.UTC)
	if err := h.Store.AddRefusals(context.Background(), []*store.Refusal{
		{Time: at, Transport: "https", Operation: "register", RegistrationID: "dev-a", Credential: "no credentials", Status: 401, ErrorCode: 401002, Reason: "reason of dev-a", Peer: "192.0.2.7:1234"},
		{Time: at.Add(time.Minute), Transport: "mqtt", Operation: "poll", RegistrationID: "dev-b", Credential: "SAS token for skn=registration", Status: 404, ErrorCode: 404006, Reason: "reason of dev-b"},
	}); err != nil {
		t.Fatal(err)
	}
	all := b.get("/console/refusals").want(t, http.StatusOK, "reason of dev-a", "reason of dev-b", "192.0.2.7:1234", "poll over mqtt")
	if regexp.MustCompile(`reason of dev-b[\s\S]*reason of dev-a`).FindString(all.Body) == "" {
		t.Error("the journal is not newest first")
	}
	p := b.get("/console/refusals?registrationId=DEV-A").want(t, http.StatusOK, "reason of dev-a")
	if regexp.MustCompile(`reason of dev-b`).MatchString(p.Body) {
		t.Error("the registration ID filter let dev-b through")
	}
	p = b.get("/console/refusals?errorCode=404006&since=2025-05-06T07:08").want(t, http.StatusOK, "reason of dev-b")
	if regexp.MustCompile(`reason of dev-a`).MatchString(p.Body) {
		t.Error("the errorCode and since filters let dev-a through")
	}
	b.get("/console/refusals?errorCode=12").want(t, http.StatusBadRequest, `errorCode "12" is not a six-digit DPS error code`)
}
