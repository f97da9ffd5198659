package provisioning_test

import (
	"context"
	"crypto/x509"
	"errors"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

type success struct {
	id   string
	cred provtest.Cred
	want want
}

// successFixtures enrolls the devices that must be assigned.
func successFixtures(t *testing.T, h *harness) map[string]success {
	h.LinkHub(hub1, 1, true)
	x := dps.AttestationX509
	sk := dps.AttestationSymmetricKey

	// Self-signed individual enrollments.
	self, selfKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-self-01"})
	e := provtest.X509Individual("dev-self-01", self, nil)
	e.DeviceID = "custom-device-01"
	h.PutIndividual(e)
	selfA, _ := testutil.SelfSigned(t, pki.Options{CommonName: "dev-self-02"})
	selfB, selfBKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-self-02"})
	h.PutIndividual(provtest.X509Individual("dev-self-02", selfA, selfB))
	selfRSA, selfRSAKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-self-rsa", KeyType: pki.KeyRSA2048})
	h.PutIndividual(provtest.X509Individual("dev-self-rsa", selfRSA, nil))

	// Root A (verified) → Intermediate A, whose certificate is a group's.
	rootA := h.VerifiedRoot("root-a", pki.Options{CommonName: "Root A"})
	interA := rootA.Intermediate(t, pki.Options{CommonName: "Intermediate A"})
	h.PutGroup(provtest.SigningGroup("grp-inter-a", interA.Cert))
	// Root R (verified), referenced by a group.
	rootR := h.VerifiedRoot("root-r", pki.Options{CommonName: "Root R"})
	h.PutGroup(provtest.CAGroup("grp-root-r", "root-r"))
	interR := rootR.Intermediate(t, pki.Options{CommonName: "Intermediate R"})
	// Root G with a group, Intermediate G with another: the narrower wins.
	rootG := h.VerifiedRoot("root-g", pki.Options{CommonName: "Root G"})
	h.PutGroup(provtest.CAGroup("grp-root-g", "root-g"))
	interG := rootG.Intermediate(t, pki.Options{CommonName: "Intermediate G"})
	h.PutGroup(provtest.SigningGroup("grp-inter-g", interG.Cert))

	leaf := func(c testutil.CA, cn string, o pki.Options, more ...*x509.Certificate) (provtest.Cred, *x509.Certificate) {
		o.CommonName = cn
		l, k := c.Leaf(t, o)
		return provtest.Cred{Cert: testutil.TLSCert(k, append([]*x509.Certificate{l}, more...)...)}, l
	}
	chainA, leafChainA := leaf(interA, "dev-chain-01", pki.Options{}, interA.Cert)
	fullA, leafFullA := leaf(interA, "dev-chain-02", pki.Options{}, interA.Cert, rootA.Cert)
	viaR, leafViaR := leaf(interR, "dev-ca-01", pki.Options{}, interR.Cert, rootR.Cert)
	underR, leafUnderR := leaf(rootR, "dev-ca-02", pki.Options{}, rootR.Cert)
	viaG, leafViaG := leaf(interG, "dev-precedence-01", pki.Options{}, interG.Cert, rootG.Cert)
	caseCred, leafCase := leaf(interA, "Dev-Case-01", pki.Options{}, interA.Cert)
	noEKU, leafNoEKU := leaf(interA, "dev-no-eku", pki.Options{ExtKeyUsage: []x509.ExtKeyUsage{}}, interA.Cert)
	anyEKU, leafAnyEKU := leaf(interA, "dev-any-eku", pki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, interA.Cert)
	indCA, leafIndCA := leaf(interA, "dev-ind-ca", pki.Options{}, interA.Cert)
	// Chains that stop below their anchor: the leaf alone under a group's
	// signing certificate (Azure's device test "x509 group enrollment
	// without cert chain"), and leaf and intermediate without the verified
	// root a group references (what Azure's C SDK documentation says to send).
	leafOnlyA, leafLeafOnlyA := leaf(interA, "dev-leaf-only", pki.Options{})
	belowR, leafBelowR := leaf(interR, "dev-below-root", pki.Options{}, interR.Cert)
	leafOnlyR, leafLeafOnlyR := leaf(rootR, "dev-leaf-only-root", pki.Options{})
	h.PutIndividual(provtest.X509Individual("dev-ind-ca", leafIndCA, nil))

	// Symmetric keys: an individual enrollment on an explicit hub, a group.
	ind := provtest.SymIndividual("sym-ind-01")
	ind.IotHubs = []string{hub1}
	ipk, _ := provtest.Keys(t, h.PutIndividual(ind).Attestation)
	gpk, gsk := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-sym")).Attestation)
	derived := func(id string, groupKey []byte) []byte { return sas.DeriveDeviceKey(groupKey, id) }
	hour := time.Now().Add(time.Hour)
	s := h.Scope

	return map[string]success{
		"ok/self-signed-individual": {id: "dev-self-01", cred: provtest.Cred{Cert: testutil.TLSCert(selfKey, self)},
			want: want{deviceID: "custom-device-01", mechanism: x, leaf: self}},
		"ok/self-signed-individual-secondary-certificate": {id: "dev-self-02", cred: provtest.Cred{Cert: testutil.TLSCert(selfBKey, selfB)},
			want: want{mechanism: x, leaf: selfB}},
		"ok/self-signed-individual-rsa": {id: "dev-self-rsa", cred: provtest.Cred{Cert: testutil.TLSCert(selfRSAKey, selfRSA)},
			want: want{mechanism: x, leaf: selfRSA}},
		"ok/individual-enrollment-for-ca-issued-leaf-before-its-group": {id: "dev-ind-ca", cred: indCA,
			want: want{mechanism: x, leaf: leafIndCA}},
		"ok/chain-to-group-signing-intermediate": {id: "dev-chain-01", cred: chainA,
			want: want{mechanism: x, groupID: "grp-inter-a", leaf: leafChainA, signer: interA.Cert}},
		"ok/chain-leaf-intermediate-root-group-on-intermediate": {id: "dev-chain-02", cred: fullA,
			want: want{mechanism: x, groupID: "grp-inter-a", leaf: leafFullA, signer: interA.Cert}},
		"ok/chain-to-verified-root-through-ca-reference": {id: "dev-ca-01", cred: viaR,
			want: want{mechanism: x, groupID: "grp-root-r", leaf: leafViaR, signer: rootR.Cert}},
		"ok/leaf-issued-by-verified-root-ca-reference": {id: "dev-ca-02", cred: underR,
			want: want{mechanism: x, groupID: "grp-root-r", leaf: leafUnderR, signer: rootR.Cert}},
		"ok/leaf-only-issued-by-group-signing-certificate": {id: "dev-leaf-only", cred: leafOnlyA,
			want: want{mechanism: x, groupID: "grp-inter-a", leaf: leafLeafOnlyA, signer: interA.Cert}},
		"ok/chain-up-to-but-not-including-verified-root": {id: "dev-below-root", cred: belowR,
			want: want{mechanism: x, groupID: "grp-root-r", leaf: leafBelowR, signer: rootR.Cert}},
		"ok/leaf-only-issued-by-verified-root-ca-reference": {id: "dev-leaf-only-root", cred: leafOnlyR,
			want: want{mechanism: x, groupID: "grp-root-r", leaf: leafLeafOnlyR, signer: rootR.Cert}},
		"ok/intermediate-group-before-root-group": {id: "dev-precedence-01", cred: viaG,
			want: want{mechanism: x, groupID: "grp-inter-g", leaf: leafViaG, signer: interG.Cert}},
		"ok/cn-matches-registration-id-case-insensitively": {id: "dev-case-01", cred: caseCred,
			want: want{mechanism: x, groupID: "grp-inter-a", leaf: leafCase, signer: interA.Cert}},
		"ok/leaf-without-eku": {id: "dev-no-eku", cred: noEKU,
			want: want{mechanism: x, groupID: "grp-inter-a", leaf: leafNoEKU}},
		"ok/leaf-with-server-and-client-auth": {id: "dev-any-eku", cred: anyEKU,
			want: want{mechanism: x, groupID: "grp-inter-a", leaf: leafAnyEKU}},

		"ok/symmetric-key-individual-primary": {id: "sym-ind-01", cred: provtest.Cred{SAS: provtest.Token(provtest.SRLower(s, "sym-ind-01"), ipk, hour, "registration")},
			want: want{mechanism: sk}},
		"ok/symmetric-key-group-derived-primary": {id: "grp-dev-01", cred: provtest.Cred{SAS: provtest.Token(provtest.SRLower(s, "grp-dev-01"), derived("grp-dev-01", gpk), hour, "registration")},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/symmetric-key-group-derived-secondary": {id: "grp-dev-02", cred: provtest.Cred{SAS: provtest.Token(provtest.SRLower(s, "grp-dev-02"), derived("grp-dev-02", gsk), hour, "registration")},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/sas-sr-upper-hex": {id: "grp-dev-03", cred: provtest.Cred{SAS: provtest.Token(provtest.SRUpper(s, "grp-dev-03"), derived("grp-dev-03", gpk), hour, "")},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/sas-sr-raw": {id: "grp-dev-04", cred: provtest.Cred{SAS: provtest.Token(provtest.SRRaw(s, "grp-dev-04"), derived("grp-dev-04", gpk), hour, "registration")},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/sas-skn-absent": {id: "grp-dev-05", cred: provtest.Cred{SAS: provtest.Token(provtest.SRLower(s, "grp-dev-05"), derived("grp-dev-05", gpk), hour, "")},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/sas-fields-in-docs-order": {id: "grp-dev-06", cred: provtest.Cred{SAS: docsOrder(provtest.SRLower(s, "grp-dev-06"), derived("grp-dev-06", gpk), hour)},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/sas-sas-package-lower-cased-resource": {id: "grp-dev-07", cred: provtest.Cred{SAS: sas.New(sas.DeviceResource(s, "grp-dev-07"), "registration", derived("grp-dev-07", gpk), hour, true)},
			want: want{mechanism: sk, groupID: "grp-sym"}},
		"ok/sas-client-package-token": {id: "grp-dev-08", cred: provtest.Cred{SAS: client.SASToken(s, "grp-dev-08", client.DeriveKey(gpk, "grp-dev-08"), hour)},
			want: want{mechanism: sk, groupID: "grp-sym"}},
	}
}

// docsOrder builds a token with the fields in the order the docs show:
// sig, se, skn, sr.
func docsOrder(sr string, key []byte, expiry time.Time) string {
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := url.QueryEscape(encodeB64(sas.Sign(key, sr, se)))
	return "SharedAccessSignature sig=" + sig + "&se=" + se + "&skn=registration&sr=" + sr
}

// TestSuccesses provisions every kind of device through the HTTPS device API
// in the fast and the strict mode, and checks the answers, the poll, the
// status lookup and the stored record.
func TestSuccesses(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h := newHarness(t, options{strict: mode.Strict})
		start := time.Now()
		for name, tc := range successFixtures(t, h) {
			t.Run(name, func(t *testing.T) {
				w := tc.want
				w.regID, w.hub = tc.id, hub1
				if w.deviceID == "" {
					w.deviceID = tc.id
				}
				op := h.provision(t, tc.cred, tc.id)
				if op.Status != dps.StatusAssigned {
					t.Fatalf("status %q: %s", op.Status, testutil.JSON(t, op))
				}
				checkResult(t, op.RegistrationState, w, start)
				h.checkLookup(t, tc.cred, tc.id, op.RegistrationState)
				rec, err := h.Store.Registration(context.Background(), tc.id)
				if err != nil {
					t.Fatal(err)
				}
				if rec.EnrollmentGroupID != w.groupID {
					t.Errorf("stored record's group = %q, want %q", rec.EnrollmentGroupID, w.groupID)
				}
			})
		}
		// The secondary key of the individual enrollment, on a device
		// of its own.
		t.Run("ok/symmetric-key-individual-secondary", func(t *testing.T) {
			e := provtest.SymIndividual("sym-ind-02")
			_, isk := provtest.Keys(t, h.PutIndividual(e).Attestation)
			c := provtest.Cred{SAS: h.DeviceToken("sym-ind-02", isk)}
			op := h.provision(t, c, "sym-ind-02")
			checkResult(t, op.RegistrationState, want{regID: "sym-ind-02", deviceID: "sym-ind-02", hub: hub1, mechanism: dps.AttestationSymmetricKey}, start)
			h.checkLookup(t, c, "sym-ind-02", op.RegistrationState)
		})
	})
}

// TestSASTestVectors checks the SAS test vectors of docs/protocol.md: the derived key of the doc
// example, the three encodings of sr with their published signatures through
// sas.Parse and Verify, and the same tokens through the HTTPS device API of
// an instance whose ID scope is 0ne00111111 and whose clock is before the
// tokens' expiry.
func TestSASTestVectors(t *testing.T) {
	t.Parallel()
	const (
		groupKey = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
		regID    = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
		devKey   = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
		scope    = "0ne00111111"
	)
	gk, err := sas.DecodeKey(groupKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeB64(sas.DeriveDeviceKey(gk, regID)); got != devKey {
		t.Fatalf("sas.DeriveDeviceKey = %s, want %s", got, devKey)
	}
	if got := encodeB64(client.DeriveKey(gk, regID)); got != devKey {
		t.Fatalf("client.DeriveKey = %s, want %s", got, devKey)
	}
	dk, _ := sas.DecodeKey(devKey)
	vectors := map[string]string{
		"sr-lower-hex": "SharedAccessSignature sr=0ne00111111%2fregistrations%2f" + regID + "&sig=LwAx%2BRfQDq37RAHvptYP8R3382xvZ%2FBntAGlh8Wmu18%3D&se=1700000000&skn=registration",
		"sr-upper-hex": "SharedAccessSignature sr=0ne00111111%2Fregistrations%2F" + regID + "&sig=2srIk05%2FHc3kiyY2AcAwJosiRYk6C6jOscAYhKLO2L8%3D&se=1700000000",
		"sr-raw":       "SharedAccessSignature sr=0ne00111111/registrations/" + regID + "&sig=%2F%2Beah6KDNGyh0EVauDWy8TsgRl239ASFozi9g%2BrShXg%3D&se=1700000000&skn=registration",
	}
	for name, tok := range vectors {
		t.Run("parse/"+name, func(t *testing.T) {
			p, err := sas.Parse(tok)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Verify(dk) {
				t.Error("the published signature does not verify with the derived key")
			}
			if p.Verify(gk) {
				t.Error("the signature verifies with the group key")
			}
			if !p.MatchesDevice(scope, regID) || p.MatchesDevice(scope, regID+"x") {
				t.Errorf("MatchesDevice wrong for resource %q", p.Resource)
			}
			if p.Expiry.Unix() != 1700000000 {
				t.Errorf("expiry = %v", p.Expiry)
			}
		})
	}
	// Through the device API, at a time before the tokens expire.
	clock := func() time.Time { return time.Unix(1699999000, 0) }
	h := newHarness(t, options{scope: scope, now: clock})
	h.LinkHub(hub1, 1, true)
	g := provtest.SymGroup("doc-group")
	g.Attestation.SymmetricKey = &dps.SymmetricKeyAttestation{PrimaryKey: groupKey}
	h.PutGroup(g)
	for name, tok := range vectors {
		t.Run("https/"+name, func(t *testing.T) {
			// Each token registers the device afresh: only authentication
			// is under test here (TestReregistration covers the rest).
			if err := h.Store.DeleteRegistration(context.Background(), regID, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
			r := h.register(t, provtest.Cred{SAS: tok}, regID).must(t, "register")
			if r.Status != 202 {
				t.Fatalf("register: %s", r)
			}
			op := r.operation(t)
			checkResult(t, op.RegistrationState, want{regID: regID, deviceID: regID, hub: hub1, mechanism: dps.AttestationSymmetricKey, groupID: "doc-group"}, time.Time{})
		})
	}
	t.Run("https/expired-at-server-time", func(t *testing.T) {
		h2 := newHarness(t, options{scope: scope, now: func() time.Time { return time.Unix(1700000000, 0) }})
		h2.PutGroup(g)
		checkRefusal(t, h2.register(t, provtest.Cred{SAS: vectors["sr-raw"]}, regID), 401, 401002, "the SAS token expired at 2023-11-14T22:13:20Z")
	})
}

// TestClientRegister drives the public Go client against the device API:
// an X.509 device presenting its chain, and a group-derived symmetric key.
func TestClientRegister(t *testing.T) {
	t.Parallel()
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	root := h.VerifiedRoot("client-root", pki.Options{CommonName: "Client Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "Client Intermediate"})
	h.PutGroup(provtest.SigningGroup("grp-client", inter.Cert))
	gpk, _ := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-client-sym")).Attestation)
	leaf, key := inter.Leaf(t, pki.Options{CommonName: "client-x509-01"})
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()

	t.Run("x509-chain", func(t *testing.T) {
		st, err := client.Register(ctx, client.Config{
			Endpoint: h.Host, IDScope: h.Scope, RegistrationID: "client-x509-01",
			Certificate: testutil.TLSCert(key, leaf, inter.Cert), RootCAs: h.roots,
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if st.Status != "assigned" || st.AssignedHub != hub1 || st.DeviceID != "client-x509-01" || st.Substatus != "initialAssignment" {
			t.Errorf("state = %+v", st)
		}
		if st.X509 == nil || st.X509.EnrollmentGroupID != "grp-client" {
			t.Errorf("x509 = %+v, want enrollmentGroupId grp-client", st.X509)
		}
		if st.CreatedDateTimeUTC == "" || st.Etag == "" {
			t.Errorf("state without createdDateTimeUtc or etag: %+v", st)
		}
	})
	t.Run("symmetric-key-group", func(t *testing.T) {
		st, err := client.Register(ctx, client.Config{
			Endpoint: h.Host, IDScope: h.Scope, RegistrationID: "client-sym-01",
			SymmetricKey: client.DeriveKey(gpk, "client-sym-01"), RootCAs: h.roots, Payload: []byte(`{"model":"x1"}`),
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if st.Status != "assigned" || st.AssignedHub != hub1 || st.SymmetricKey == nil || st.SymmetricKey.EnrollmentGroupID != "grp-client-sym" {
			t.Errorf("state = %+v", st)
		}
	})
	// store.Registration.DevicePayload: "the payload the device sent with
	// its last register request (custom allocation and operators read it)".
	t.Run("device-payload-is-kept-in-the-record", func(t *testing.T) {
		rec, err := h.Store.Registration(ctx, "client-sym-01")
		if err != nil {
			t.Fatal(err)
		}
		if string(rec.DevicePayload) != `{"model":"x1"}` {
			t.Errorf("stored DevicePayload = %q, want the payload the device sent, {\"model\":\"x1\"}", rec.DevicePayload)
		}
	})
	t.Run("refused-is-error-401002", func(t *testing.T) {
		_, err := client.Register(ctx, client.Config{
			Endpoint: h.Host, IDScope: h.Scope, RegistrationID: "client-sym-02",
			SymmetricKey: gpk, RootCAs: h.roots,
		})
		var ce *client.Error
		if !errors.As(err, &ce) || ce.StatusCode != 401 || ce.ErrorCode != 401002 {
			t.Fatalf("err = %v, want *client.Error 401 401002", err)
		}
	})
	t.Run("disabled-is-status-error", func(t *testing.T) {
		g := provtest.SymGroup("grp-client-disabled")
		g.ProvisioningStatus = "disabled"
		dpk, _ := provtest.Keys(t, h.PutGroup(g).Attestation)
		st, err := client.Register(ctx, client.Config{
			Endpoint: h.Host, IDScope: h.Scope, RegistrationID: "client-sym-03",
			SymmetricKey: client.DeriveKey(dpk, "client-sym-03"), RootCAs: h.roots,
		})
		var se *client.StatusError
		if !errors.As(err, &se) || se.State.Status != "disabled" || st == nil || st.Status != "disabled" {
			t.Fatalf("Register = %+v, %v; want a *client.StatusError with status disabled", st, err)
		}
	})
}
