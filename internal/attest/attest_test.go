package attest_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

const scope = "0ne00111111"

// env is an Attestor over a SQLite store whose clock a test sets.
type env struct {
	provtest.Instance
	a     *attest.Attestor
	clock time.Time
	logs  *testutil.LogBuffer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	st, _, _ := provtest.OpenStore(t)
	t.Cleanup(func() { st.Close() })
	log, logs := testutil.NewLogger(t, slog.LevelInfo)
	e := &env{Instance: provtest.Instance{T: t, Store: st, Scope: scope}, clock: time.Now(), logs: logs}
	e.a = &attest.Attestor{Store: st, Log: log, Now: func() time.Time { return e.clock }}
	return e
}

func must[T any](t *testing.T) func(T, crypto.Signer, error) (T, crypto.Signer) {
	return func(v T, k crypto.Signer, err error) (T, crypto.Signer) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v, k
	}
}

// refused checks a 401 401002 refusal and its message.
func refused(t *testing.T, id *attest.Identity, err error, reason string) {
	t.Helper()
	var de *dpserr.Error
	if !errors.As(err, &de) {
		t.Fatalf("got identity %+v, error %v; want a refusal containing %q", id, err, reason)
	}
	if de.Status != http.StatusUnauthorized || de.Code != dpserr.CodeUnauthorized {
		t.Errorf("refusal %d %d, want 401 401002", de.Status, de.Code)
	}
	if !strings.Contains(de.Message, reason) {
		t.Errorf("message %q does not contain %q", de.Message, reason)
	}
	if id != nil {
		t.Errorf("identity %+v returned with a refusal", id)
	}
}

// TestX509ValidityBoundaries moves the clock around a leaf's and an
// intermediate's validity period: valid from NotBefore to NotAfter
// inclusive, refused one second outside.
func TestX509ValidityBoundaries(t *testing.T) {
	e := newEnv(t)
	nb := time.Now().Add(-time.Hour).Truncate(time.Second)
	na := nb.Add(48 * time.Hour)
	leaf, _ := must[*x509.Certificate](t)(pki.NewSelfSigned(pki.Options{CommonName: "valid-dev", NotBefore: nb, NotAfter: na}))
	e.PutIndividual(provtest.X509Individual("valid-dev", leaf, nil))
	root, rootKey := must[*x509.Certificate](t)(pki.NewRootCA(pki.Options{CommonName: "Boundary Root", NotBefore: nb.Add(-time.Hour), NotAfter: na.Add(time.Hour)}))
	inter, interKey := must[*x509.Certificate](t)(pki.NewIntermediateCA(pki.Options{CommonName: "Boundary Intermediate", NotBefore: nb.Add(time.Minute), NotAfter: na.Add(-time.Minute)}, root, rootKey))
	e.UploadCA("boundary-root", root, true)
	e.PutGroup(provtest.CAGroup("grp-boundary", "boundary-root"))
	gleaf, _ := must[*x509.Certificate](t)(pki.NewLeaf(pki.Options{CommonName: "valid-grp-dev", NotBefore: nb, NotAfter: na}, inter, interKey))
	chain := []*x509.Certificate{gleaf, inter, root}

	tests := map[string]struct {
		at     time.Time
		id     string
		chain  []*x509.Certificate
		reason string // "" = accepted
	}{
		"fail/leaf-one-second-before-not-before": {at: nb.Add(-time.Second), id: "valid-dev", chain: []*x509.Certificate{leaf}, reason: "certificate CN=valid-dev is not valid before " + nb.UTC().Format(time.RFC3339)},
		"ok/leaf-at-not-before":                  {at: nb, id: "valid-dev", chain: []*x509.Certificate{leaf}},
		"ok/leaf-at-not-after":                   {at: na, id: "valid-dev", chain: []*x509.Certificate{leaf}},
		"fail/leaf-one-second-after-not-after":   {at: na.Add(time.Second), id: "valid-dev", chain: []*x509.Certificate{leaf}, reason: "certificate CN=valid-dev expired at " + na.UTC().Format(time.RFC3339)},
		"fail/intermediate-not-yet-valid":        {at: nb.Add(30 * time.Second), id: "valid-grp-dev", chain: chain, reason: "CA certificate CN=Boundary Intermediate is not valid before"},
		"ok/chain-inside-every-period":           {at: nb.Add(2 * time.Minute), id: "valid-grp-dev", chain: chain},
		"fail/intermediate-expired":              {at: na.Add(-30 * time.Second), id: "valid-grp-dev", chain: chain, reason: "CA certificate CN=Boundary Intermediate expired at"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			e.clock = tc.at
			id, err := e.a.X509(context.Background(), tc.id, tc.chain)
			if tc.reason != "" {
				refused(t, id, err, tc.reason)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Mechanism != dps.AttestationX509 || id.Leaf == nil || id.Leaf.SHA256Thumbprint != pki.SHA256Thumbprint(tc.chain[0]) {
				t.Errorf("identity %+v", id)
			}
		})
	}
}

// TestX509Precedence: the individual enrollment first; then the group of the
// first issuing certificate presented, then the next; among groups on one
// certificate, the first by ID (ignoring case), with a warning in the log.
func TestX509Precedence(t *testing.T) {
	e := newEnv(t)
	root, rootKey := must[*x509.Certificate](t)(pki.NewRootCA(pki.Options{CommonName: "P Root"}))
	inter, interKey := must[*x509.Certificate](t)(pki.NewIntermediateCA(pki.Options{CommonName: "P Intermediate"}, root, rootKey))
	e.UploadCA("p-root", root, true)
	e.PutGroup(provtest.CAGroup("grp-root", "p-root"))
	e.PutGroup(provtest.SigningGroup("zz-inter", inter))
	e.PutGroup(provtest.SigningGroup("B-inter", inter))
	e.UploadCA("p-inter", inter, true)
	e.PutGroup(provtest.CAGroup("c-inter-ca", "p-inter"))
	leaf := func(cn string) *x509.Certificate {
		l, _ := must[*x509.Certificate](t)(pki.NewLeaf(pki.Options{CommonName: cn}, inter, interKey))
		return l
	}
	ind := leaf("p-ind")
	e.PutIndividual(provtest.X509Individual("p-ind", ind, nil))

	id, err := e.a.X509(context.Background(), "p-ind", []*x509.Certificate{ind, inter, root})
	if err != nil || id.Individual == nil || id.Group != nil || id.GroupID() != "" || id.EnrollmentName() != `enrollment "p-ind"` {
		t.Errorf("individual enrollment: identity %+v, %v", id, err)
	}
	id, err = e.a.X509(context.Background(), "p-grp", []*x509.Certificate{leaf("p-grp"), inter, root})
	if err != nil || id.GroupID() != "B-inter" || id.Individual != nil {
		t.Fatalf("group: identity %+v, %v; want B-inter (first by ID among the intermediate's three)", id, err)
	}
	if id.Signer == nil || id.Signer.SHA256Thumbprint != pki.SHA256Thumbprint(inter) || id.EnrollmentName() != `enrollment group "B-inter"` {
		t.Errorf("signer %+v, name %q", id.Signer, id.EnrollmentName())
	}
	if !strings.Contains(e.logs.String(), "several enrollment groups match one certificate") {
		t.Errorf("no warning about several groups on one certificate in the log:\n%s", e.logs.String())
	}
}

// TestX509DNSName: C# devices take the first DNS name for the registration
// ID, so dpsd accepts it when it differs from the CN; only the first.
func TestX509DNSName(t *testing.T) {
	e := newEnv(t)
	c, _ := must[*x509.Certificate](t)(pki.NewSelfSigned(pki.Options{CommonName: "cn-name", DNSNames: []string{"dns-dev", "second-dev"}}))
	e.PutIndividual(provtest.X509Individual("dns-dev", c, nil))
	e.PutIndividual(provtest.X509Individual("second-dev", c, nil))
	if id, err := e.a.X509(context.Background(), "DNS-DEV", []*x509.Certificate{c}); err != nil || id.Individual.RegistrationID != "dns-dev" {
		t.Errorf("first DNS name: %+v, %v", id, err)
	}
	id, err := e.a.X509(context.Background(), "second-dev", []*x509.Certificate{c})
	refused(t, id, err, `certificate CN "cn-name" does not match registration ID "second-dev"`)
}

// TestSymmetricKey covers what the HTTPS tests cannot reach easily: the
// expiry boundary, the group hint, the SAS test vectors of docs/protocol.md at the attestor, and
// precedence of the individual enrollment over groups.
func TestSymmetricKey(t *testing.T) {
	const docGroupKey = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	const docID = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	e := newEnv(t)
	doc := e.PutGroup(&dps.EnrollmentGroup{EnrollmentGroupID: "doc-group", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: "symmetricKey",
		SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: docGroupKey}}}})
	other := e.PutGroup(&dps.EnrollmentGroup{EnrollmentGroupID: "other-group", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: "symmetricKey"}}})
	ok, _ := sas.DecodeKey(other.Attestation.SymmetricKey.PrimaryKey)
	dk, _ := sas.DecodeKey(doc.Attestation.SymmetricKey.PrimaryKey)
	ctx := context.Background()

	vectors := []string{
		"SharedAccessSignature sr=0ne00111111%2fregistrations%2f" + docID + "&sig=LwAx%2BRfQDq37RAHvptYP8R3382xvZ%2FBntAGlh8Wmu18%3D&se=1700000000&skn=registration",
		"SharedAccessSignature sr=0ne00111111%2Fregistrations%2F" + docID + "&sig=2srIk05%2FHc3kiyY2AcAwJosiRYk6C6jOscAYhKLO2L8%3D&se=1700000000",
		"SharedAccessSignature sr=0ne00111111/registrations/" + docID + "&sig=%2F%2Beah6KDNGyh0EVauDWy8TsgRl239ASFozi9g%2BrShXg%3D&se=1700000000&skn=registration",
	}
	for i, tok := range vectors {
		e.clock = time.Unix(1699999999, 0)
		id, err := e.a.SymmetricKey(ctx, scope, docID, tok, "")
		if err != nil || id.GroupID() != "doc-group" || id.Mechanism != dps.AttestationSymmetricKey {
			t.Errorf("vector %d one second before expiry: %+v, %v", i, id, err)
		}
		e.clock = time.Unix(1700000000, 0)
		id, err = e.a.SymmetricKey(ctx, scope, docID, tok, "")
		refused(t, id, err, "the SAS token expired at 2023-11-14T22:13:20Z (server time 2023-11-14T22:13:20Z)")
	}
	e.clock = time.Now()

	tok := func(id string, key []byte) string {
		return sas.New(sas.DeviceResource(scope, id), "registration", key, e.clock.Add(time.Hour), true)
	}
	t.Run("hint-of-the-right-group", func(t *testing.T) {
		id, err := e.a.SymmetricKey(ctx, scope, "h-dev", tok("h-dev", sas.DeriveDeviceKey(ok, "h-dev")), "other-group")
		if err != nil || id.GroupID() != "other-group" {
			t.Errorf("%+v, %v", id, err)
		}
	})
	t.Run("hint-of-another-group-falls-back-to-the-scan", func(t *testing.T) {
		id, err := e.a.SymmetricKey(ctx, scope, "h-dev", tok("h-dev", sas.DeriveDeviceKey(ok, "h-dev")), "doc-group")
		if err != nil || id.GroupID() != "other-group" {
			t.Errorf("%+v, %v", id, err)
		}
	})
	t.Run("hint-of-a-deleted-group-falls-back-to-the-scan", func(t *testing.T) {
		id, err := e.a.SymmetricKey(ctx, scope, "h-dev", tok("h-dev", sas.DeriveDeviceKey(ok, "h-dev")), "deleted-group")
		if err != nil || id.GroupID() != "other-group" {
			t.Errorf("%+v, %v", id, err)
		}
	})
	t.Run("hint-naming-an-x509-group", func(t *testing.T) {
		root, _ := must[*x509.Certificate](t)(pki.NewRootCA(pki.Options{CommonName: "Hint Root"}))
		e.PutGroup(provtest.SigningGroup("x509-group", root))
		id, err := e.a.SymmetricKey(ctx, scope, "h-dev", tok("h-dev", sas.DeriveDeviceKey(ok, "h-dev")), "x509-group")
		if err != nil || id.GroupID() != "other-group" {
			t.Errorf("%+v, %v", id, err)
		}
	})
	t.Run("hint-group-key-used-directly-refused", func(t *testing.T) {
		id, err := e.a.SymmetricKey(ctx, scope, "h-dev", tok("h-dev", ok), "other-group")
		refused(t, id, err, "a group key cannot authenticate a device")
	})
	t.Run("expiry-boundary", func(t *testing.T) {
		key := sas.DeriveDeviceKey(dk, "b-dev")
		id, err := e.a.SymmetricKey(ctx, scope, "b-dev", sas.New(sas.DeviceResource(scope, "b-dev"), "", key, e.clock.Add(time.Second), false), "")
		if err != nil || id.GroupID() != "doc-group" {
			t.Errorf("token expiring in a second: %+v, %v", id, err)
		}
		id, err = e.a.SymmetricKey(ctx, scope, "b-dev", sas.New(sas.DeviceResource(scope, "b-dev"), "", key, e.clock, false), "")
		refused(t, id, err, "the SAS token expired at")
	})
	t.Run("max-lifetime", func(t *testing.T) {
		key := sas.DeriveDeviceKey(dk, "l-dev")
		a := *e.a
		a.MaxSASLifetime = time.Hour
		id, err := a.SymmetricKey(ctx, scope, "l-dev", sas.New(sas.DeviceResource(scope, "l-dev"), "", key, e.clock.Add(time.Hour), false), "")
		if err != nil || id.GroupID() != "doc-group" {
			t.Errorf("token valid for the maximum: %+v, %v", id, err)
		}
		id, err = a.SymmetricKey(ctx, scope, "l-dev", sas.New(sas.DeviceResource(scope, "l-dev"), "", key, e.clock.Add(time.Hour+time.Second), false), "")
		refused(t, id, err, "longer than the 1h0m0s this server accepts")
		id, err = e.a.SymmetricKey(ctx, scope, "l-dev", sas.New(sas.DeviceResource(scope, "l-dev"), "", key, e.clock.Add(24*365*time.Hour), false), "")
		if err != nil || id.GroupID() != "doc-group" {
			t.Errorf("without a maximum, a token valid for a year: %+v, %v", id, err)
		}
	})
	t.Run("individual-enrollment-before-groups", func(t *testing.T) {
		en := &dps.IndividualEnrollment{RegistrationID: "both-dev", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: "symmetricKey"}}}
		e.PutIndividual(en)
		id, err := e.a.SymmetricKey(ctx, scope, "both-dev", tok("both-dev", sas.DeriveDeviceKey(ok, "both-dev")), "")
		refused(t, id, err, `matches neither the primary nor the secondary key of individual enrollment "both-dev"`)
		pk, _ := sas.DecodeKey(en.Attestation.SymmetricKey.PrimaryKey)
		id, err = e.a.SymmetricKey(ctx, scope, "BOTH-DEV", tok("both-dev", pk), "other-group")
		if err != nil || id.Individual == nil || id.Group != nil {
			t.Errorf("individual key: %+v, %v", id, err)
		}
	})
	t.Run("registration-id-case-in-token", func(t *testing.T) {
		key := sas.DeriveDeviceKey(ok, "case-dev")
		id, err := e.a.SymmetricKey(ctx, scope, "case-dev", sas.New(sas.DeviceResource(strings.ToLower(scope), "CASE-DEV"), "", key, e.clock.Add(time.Hour), false), "")
		if err != nil || id.GroupID() != "other-group" {
			t.Errorf("%+v, %v", id, err)
		}
	})
}

// TestX509KeyAndChainRules: the weakest keys accepted and the longest chain
// are configurable; zero means the defaults (RSA 2048, P-256, 10
// certificates). P-224 cannot be tested over TLS (Go's TLS stack does not
// sign with it), so it is tested here.
func TestX509KeyAndChainRules(t *testing.T) {
	e := newEnv(t)
	root, rootKey := must[*x509.Certificate](t)(pki.NewRootCA(pki.Options{CommonName: "K Root"}))
	e.UploadCA("k-root", root, true)
	e.PutGroup(provtest.CAGroup("grp-k", "k-root"))
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(id string, key crypto.Signer) []*x509.Certificate {
		l, _ := must[*x509.Certificate](t)(pki.NewLeaf(pki.Options{CommonName: id, Key: key}, root, rootKey))
		return []*x509.Certificate{l, root}
	}
	deep := []*x509.Certificate{root}
	parent, parentKey := root, rootKey
	for i := range 3 {
		c, k := must[*x509.Certificate](t)(pki.NewIntermediateCA(pki.Options{CommonName: fmt.Sprintf("K Inter %d", i)}, parent, parentKey))
		deep = append([]*x509.Certificate{c}, deep...)
		parent, parentKey = c, k
	}
	l, _ := must[*x509.Certificate](t)(pki.NewLeaf(pki.Options{CommonName: "k-deep"}, parent, parentKey))
	deep = append([]*x509.Certificate{l}, deep...) // five certificates

	tests := map[string]struct {
		a      attest.Attestor
		id     string
		chain  []*x509.Certificate
		reason string
	}{
		"fail/p224-default":               {id: "k-p224", chain: leaf("k-p224", p224), reason: "certificate CN=k-p224 has a P-224 key; dpsd accepts elliptic curve keys of at least 256 bits"},
		"ok/p384-default":                 {id: "k-p384", chain: leaf("k-p384", p384)},
		"fail/p256-below-min-384":         {a: attest.Attestor{MinECBits: 384}, id: "k-p256", chain: leaf("k-p256", nil), reason: "has a P-256 key; dpsd accepts elliptic curve keys of at least 384 bits"},
		"ok/rsa-2048-default":             {id: "k-rsa", chain: leaf("k-rsa", rsa2048)},
		"fail/rsa-2048-below-min-3072":    {a: attest.Attestor{MinRSABits: 3072}, id: "k-rsa3072", chain: leaf("k-rsa3072", rsa2048), reason: "has a 2048-bit RSA key; dpsd accepts RSA keys of at least 3072 bits"},
		"ok/five-certificates-default":    {id: "k-deep", chain: deep},
		"fail/five-certificates-max-four": {a: attest.Attestor{MaxChainLength: 4}, id: "k-deep", chain: deep, reason: "the device presented 5 certificates; at most 4 are accepted"},
		"ok/five-certificates-max-five":   {a: attest.Attestor{MaxChainLength: 5}, id: "k-deep", chain: deep},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			a := tc.a
			a.Store, a.Now = e.Store, e.a.Now
			id, err := a.X509(context.Background(), tc.id, tc.chain)
			if tc.reason != "" {
				refused(t, id, err, tc.reason)
				return
			}
			if err != nil || id.GroupID() != "grp-k" {
				t.Fatalf("identity %+v, error %v; want group grp-k", id, err)
			}
		})
	}
}

// TestX509SignaturePrecedence: crypto/x509 verifies the signatures of an
// accepted chain, and the links' own signature checks run only for a
// refusal; the reasons stay those of checking each link in order. A forged
// signature is reported before a later fault of the chain, and a chain
// crypto/x509 could complete through another path (skipping a presented
// certificate whose key did not sign) is still refused.
func TestX509SignaturePrecedence(t *testing.T) {
	e := newEnv(t)
	now := time.Now()
	root := e.VerifiedRoot("p-root", pki.Options{CommonName: "P Root"})
	e.PutGroup(provtest.CAGroup("grp-p", "p-root"))
	expired := root.Intermediate(t, pki.Options{CommonName: "P Expired", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	// Same subjects as the real certificates, other keys.
	rogueExpired := testutil.NewRoot(t, pki.Options{CommonName: "P Expired"})
	rogueRoot := testutil.NewRoot(t, pki.Options{CommonName: "P Root"})
	forged, _ := rogueExpired.Leaf(t, pki.Options{CommonName: "p-forged"})
	direct, _ := root.Leaf(t, pki.Options{CommonName: "p-direct"})
	good, _ := root.Leaf(t, pki.Options{CommonName: "p-good"})

	for name, tc := range map[string]struct {
		id     string
		chain  []*x509.Certificate
		reason string
	}{
		"fail/forged-below-expired-intermediate": {id: "p-forged", chain: []*x509.Certificate{forged, expired.Cert, root.Cert},
			reason: "the signature of certificate CN=p-forged does not verify with the key of CN=P Expired"},
		"fail/rogue-certificate-in-the-middle": {id: "p-direct", chain: []*x509.Certificate{direct, rogueRoot.Cert, root.Cert},
			reason: "the signature of certificate CN=p-direct does not verify with the key of CN=P Root"},
	} {
		t.Run(name, func(t *testing.T) {
			id, err := e.a.X509(t.Context(), tc.id, tc.chain)
			refused(t, id, err, tc.reason)
		})
	}
	if id, err := e.a.X509(t.Context(), "p-good", []*x509.Certificate{good, root.Cert}); err != nil || id.GroupID() != "grp-p" {
		t.Fatalf("identity %+v, error %v; want group grp-p", id, err)
	}
}
