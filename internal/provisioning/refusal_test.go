package provisioning_test

import (
	"crypto/rand"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
)

// refusal is a device the service must refuse (401 401002 and nothing
// written), or, with disabled, one whose matching enrollment is disabled
// (202, terminal status "disabled", no registration record).
type refusal struct {
	id       string
	scope    string // default: the harness's
	cred     cred
	reason   string // in the error message (or errorMessage when disabled)
	disabled bool
}

// refusalFixtures enrolls what the refusal cases need and returns them.
func refusalFixtures(t *testing.T, h *harness) map[string]refusal {
	now := time.Now()
	h.linkHub(hub1, 1, true)

	// A: verified root; the group is on the intermediate's certificate.
	rootA := newRoot(t, pki.Options{CommonName: "Root A"})
	h.uploadCA("root-a", rootA.cert, true)
	interA := rootA.intermediate(t, pki.Options{CommonName: "Intermediate A"})
	h.putGroup(signingGroup("grp-inter-a", interA.cert))
	// B: a CA uploaded but not verified, referenced by a group.
	rootB := newRoot(t, pki.Options{CommonName: "Root B"})
	h.uploadCA("root-b", rootB.cert, false)
	h.putGroup(caGroup("grp-ca-b", "root-b"))
	interB := rootB.intermediate(t, pki.Options{CommonName: "Intermediate B"})
	// C: a verified CA no group uses.
	rootC := newRoot(t, pki.Options{CommonName: "Root C"})
	h.uploadCA("root-c", rootC.cert, true)
	// D: a verified CA referenced by a group; odd intermediates below it.
	rootD := newRoot(t, pki.Options{CommonName: "Root D"})
	h.uploadCA("root-d", rootD.cert, true)
	h.putGroup(caGroup("grp-ca-d", "root-d"))
	interD := rootD.intermediate(t, pki.Options{CommonName: "Intermediate D"})
	notCA := rootD.intermediate(t, pki.Options{CommonName: "Not A CA", IsCA: new(false)})
	serverOnlyInter := rootD.intermediate(t, pki.Options{CommonName: "Server-Only Intermediate D", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	pathLenZero := rootD.intermediate(t, pki.Options{CommonName: "PathLen0 Intermediate D", MaxPathLen: new(0)})
	belowPathLenZero := pathLenZero.intermediate(t, pki.Options{CommonName: "Below PathLen0"})
	expiredInter := rootD.intermediate(t, pki.Options{CommonName: "Expired Intermediate D", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	// RSA CA for SHA-1 signatures.
	rootRSA := newRoot(t, pki.Options{CommonName: "Root RSA", KeyType: pki.KeyRSA2048})
	h.uploadCA("root-rsa", rootRSA.cert, true)
	h.putGroup(caGroup("grp-rsa", "root-rsa"))
	sha1Inter := rootRSA.intermediate(t, pki.Options{CommonName: "SHA-1 Intermediate", SignatureAlgorithm: x509.SHA1WithRSA, KeyType: pki.KeyRSA2048})
	// E: a disabled group on a verified CA.
	rootE := newRoot(t, pki.Options{CommonName: "Root E"})
	h.uploadCA("root-e", rootE.cert, true)
	disabledGroup := caGroup("grp-disabled", "root-e")
	disabledGroup.ProvisioningStatus = dps.ProvisioningDisabled
	h.putGroup(disabledGroup)
	// F: an enabled group on the root, a disabled one on the intermediate:
	// the narrower, disabled entry decides.
	rootF := newRoot(t, pki.Options{CommonName: "Root F"})
	h.uploadCA("root-f", rootF.cert, true)
	h.putGroup(caGroup("grp-root-f", "root-f"))
	interF := rootF.intermediate(t, pki.Options{CommonName: "Intermediate F"})
	disabledInter := signingGroup("grp-inter-f-disabled", interF.cert)
	disabledInter.ProvisioningStatus = dps.ProvisioningDisabled
	h.putGroup(disabledInter)
	// A rogue CA whose subject copies Intermediate A's.
	rogue := newRoot(t, pki.Options{CommonName: "Intermediate A"})

	leafOf := func(c ca, cn string, o pki.Options) *cred {
		o.CommonName = cn
		l, k := c.leaf(t, o)
		return &cred{cert: tlsCert(k, l)}
	}
	chain := func(c *cred, more ...*x509.Certificate) cred {
		for _, m := range more {
			c.cert.Certificate = append(c.cert.Certificate, m.Raw)
		}
		return *c
	}

	// Individual enrollments.
	ssOther, _ := selfSigned(t, pki.Options{CommonName: "dev-other-cert"})
	h.putIndividual(x509Individual("dev-other-cert", ssOther, nil))
	ssWrong, ssWrongKey := selfSigned(t, pki.Options{CommonName: "dev-other-cert"})
	ssUnknown, ssUnknownKey := selfSigned(t, pki.Options{CommonName: "dev-unknown"})
	sha1Self, sha1SelfKey := selfSigned(t, pki.Options{CommonName: "dev-sha1-self", KeyType: pki.KeyRSA2048, SignatureAlgorithm: x509.SHA1WithRSA})
	h.putIndividual(x509Individual("dev-sha1-self", sha1Self, nil))
	ssForSym, ssForSymKey := selfSigned(t, pki.Options{CommonName: "sym-dev"})
	indDisabledLeaf, indDisabledKey := interA.leaf(t, pki.Options{CommonName: "dev-ind-disabled"})
	indDisabled := x509Individual("dev-ind-disabled", indDisabledLeaf, nil)
	indDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	h.putIndividual(indDisabled)
	ssX509, _ := selfSigned(t, pki.Options{CommonName: "dev-x509-only"})
	h.putIndividual(x509Individual("dev-x509-only", ssX509, nil))

	// Symmetric keys.
	symPK, _ := keys(t, h.putIndividual(symIndividual("sym-dev")).Attestation)
	symDisabled := symIndividual("sym-disabled")
	symDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	symDisabledPK, _ := keys(t, h.putIndividual(symDisabled).Attestation)
	grpPK, grpSK := keys(t, h.putGroup(symGroup("grp-sym")).Attestation)
	symGrpDisabled := symGroup("grp-sym-disabled")
	symGrpDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	grpDisabledPK, _ := keys(t, h.putGroup(symGrpDisabled).Attestation)
	otherKey := make([]byte, 32)
	rand.Read(otherKey)
	hour := now.Add(time.Hour)
	s := h.Scope

	return map[string]refusal{
		// X.509: the leaf itself.
		"fail/expired-leaf": {id: "dev-expired", cred: chain(leafOf(interA, "dev-expired", pki.Options{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}), interA.cert),
			reason: "certificate CN=dev-expired expired at"},
		"fail/not-yet-valid-leaf": {id: "dev-future", cred: chain(leafOf(interA, "dev-future", pki.Options{NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(72 * time.Hour)}), interA.cert),
			reason: "certificate CN=dev-future is not valid before"},
		"fail/cn-differs-from-registration-id": {id: "dev-cn-b", cred: chain(leafOf(interA, "dev-cn-a", pki.Options{}), interA.cert),
			reason: `certificate CN "dev-cn-a" does not match registration ID "dev-cn-b"`},
		"fail/leaf-server-auth-only": {id: "dev-server-auth", cred: chain(leafOf(interA, "dev-server-auth", pki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), interA.cert),
			reason: "is not valid for client authentication: its extended key usage is serverAuth"},
		"fail/sha1-leaf": {id: "dev-sha1", cred: chain(leafOf(rootRSA, "dev-sha1", pki.Options{SignatureAlgorithm: x509.SHA1WithRSA}), rootRSA.cert),
			reason: "is signed with SHA1-RSA; dpsd does not accept SHA-1"},
		"fail/sha1-self-signed-individual": {id: "dev-sha1-self", cred: cred{cert: tlsCert(sha1SelfKey, sha1Self)},
			reason: "dpsd does not accept SHA-1"},
		// X.509: individual enrollments.
		"fail/unknown-self-signed": {id: "dev-unknown", cred: cred{cert: tlsCert(ssUnknownKey, ssUnknown)},
			reason: "self-signed certificate (SHA-256 thumbprint " + pki.SHA256Thumbprint(ssUnknown) + ") is not enrolled"},
		"fail/individual-enrollment-other-certificate": {id: "dev-other-cert", cred: cred{cert: tlsCert(ssWrongKey, ssWrong)},
			reason: `is neither the primary nor the secondary certificate of individual enrollment "dev-other-cert"`},
		"fail/certificate-for-symmetric-key-enrollment": {id: "sym-dev", cred: cred{cert: tlsCert(ssForSymKey, ssForSym)},
			reason: `individual enrollment "sym-dev" uses symmetricKey attestation`},
		// X.509: chains.
		"fail/chain-missing-intermediate": {id: "dev-no-inter", cred: *leafOf(interA, "dev-no-inter", pki.Options{}),
			reason: "the device sent only its own certificate (issued by CN=Intermediate A)"},
		"fail/chain-stops-below-verified-root": {id: "dev-no-root", cred: chain(leafOf(interD, "dev-no-root", pki.Options{}), interD.cert),
			reason: "does not reach a verified CA certificate or the signing certificate of an enrollment group"},
		"fail/chain-to-unverified-ca": {id: "dev-unverified", cred: chain(leafOf(rootB, "dev-unverified", pki.Options{}), rootB.cert),
			reason: `reaches CA certificate "root-b" (CN=Root B), which is not verified`},
		"fail/chain-to-unverified-ca-through-intermediate": {id: "dev-unverified-2", cred: chain(leafOf(interB, "dev-unverified-2", pki.Options{}), interB.cert, rootB.cert),
			reason: `"root-b" (CN=Root B), which is not verified`},
		"fail/chain-to-verified-ca-no-group-uses": {id: "dev-root-c", cred: chain(leafOf(rootC, "dev-root-c", pki.Options{}), rootC.cert),
			reason: `reaches verified CA certificate "root-c", but no enrollment group uses it`},
		"fail/chain-forged-with-another-groups-ca": {id: "dev-forged", cred: chain(leafOf(rogue, "dev-forged", pki.Options{}), interA.cert),
			reason: "the signature of certificate CN=dev-forged does not verify with the key of CN=Intermediate A"},
		"fail/intermediate-without-ca-true": {id: "dev-not-ca", cred: chain(leafOf(notCA, "dev-not-ca", pki.Options{}), notCA.cert, rootD.cert),
			reason: "certificate CN=Not A CA signs CN=dev-not-ca but is not a CA certificate (basic constraints CA:TRUE missing)"},
		"fail/intermediate-eku-excludes-client-auth": {id: "dev-eku-inter", cred: chain(leafOf(serverOnlyInter, "dev-eku-inter", pki.Options{}), serverOnlyInter.cert, rootD.cert),
			reason: "certificate chain does not verify"},
		"fail/path-length-constraint-exceeded": {id: "dev-pathlen", cred: chain(leafOf(belowPathLenZero, "dev-pathlen", pki.Options{}), belowPathLenZero.cert, pathLenZero.cert, rootD.cert),
			reason: "certificate chain does not verify"},
		"fail/expired-intermediate": {id: "dev-expired-inter", cred: chain(leafOf(expiredInter, "dev-expired-inter", pki.Options{}), expiredInter.cert, rootD.cert),
			reason: "CA certificate CN=Expired Intermediate D expired at"},
		"fail/sha1-intermediate": {id: "dev-sha1-inter", cred: chain(leafOf(sha1Inter, "dev-sha1-inter", pki.Options{}), sha1Inter.cert, rootRSA.cert),
			reason: "certificate CN=SHA-1 Intermediate is signed with SHA1-RSA"},
		// Disabled matches.
		"disabled/individual-enrollment-overrides-enabled-group": {id: "dev-ind-disabled", cred: cred{cert: tlsCert(indDisabledKey, indDisabledLeaf, interA.cert)},
			disabled: true, reason: `enrollment "dev-ind-disabled" is disabled`},
		"disabled/group": {id: "dev-grp-disabled", cred: chain(leafOf(rootE, "dev-grp-disabled", pki.Options{}), rootE.cert),
			disabled: true, reason: `enrollment group "grp-disabled" is disabled`},
		"disabled/intermediate-group-blocks-enabled-root-group": {id: "dev-inter-f", cred: chain(leafOf(interF, "dev-inter-f", pki.Options{}), interF.cert, rootF.cert),
			disabled: true, reason: `enrollment group "grp-inter-f-disabled" is disabled`},
		"disabled/symmetric-key-individual": {id: "sym-disabled", cred: cred{sas: h.deviceToken("sym-disabled", symDisabledPK)},
			disabled: true, reason: `enrollment "sym-disabled" is disabled`},
		"disabled/symmetric-key-group": {id: "grp-disabled-dev", cred: cred{sas: h.deviceToken("grp-disabled-dev", sas.DeriveDeviceKey(grpDisabledPK, "grp-disabled-dev"))},
			disabled: true, reason: `enrollment group "grp-sym-disabled" is disabled`},
		// No credentials.
		"fail/no-certificate-and-no-sas": {id: "dev-anonymous",
			reason: "no credentials: present the device certificate"},
		// SAS tokens.
		"fail/sas-expired": {id: "sym-dev", cred: cred{sas: token(srLower(s, "sym-dev"), symPK, now.Add(-time.Minute), "registration")},
			reason: "the SAS token expired at"},
		"fail/sas-wrong-key": {id: "sym-dev", cred: cred{sas: token(srLower(s, "sym-dev"), otherKey, hour, "registration")},
			reason: `the SAS token signature matches neither the primary nor the secondary key of individual enrollment "sym-dev"`},
		"fail/sas-group-device-wrong-key": {id: "grp-dev-x", cred: cred{sas: token(srLower(s, "grp-dev-x"), sas.DeriveDeviceKey(otherKey, "grp-dev-x"), hour, "registration")},
			reason: `matches no individual enrollment for registration ID "grp-dev-x" and no key derived from a symmetric-key enrollment group`},
		"fail/sas-key-derived-for-another-device": {id: "grp-dev-y", cred: cred{sas: token(srLower(s, "grp-dev-y"), sas.DeriveDeviceKey(grpPK, "grp-dev-z"), hour, "registration")},
			reason: "matches no individual enrollment"},
		"fail/sas-sr-another-registration-id": {id: "sym-dev", cred: cred{sas: token(srLower(s, "sym-dev-2"), symPK, hour, "registration")},
			reason: `the SAS token is for resource "` + s + `/registrations/sym-dev-2", not "` + s + `/registrations/sym-dev"`},
		"fail/sas-sr-another-scope": {id: "sym-dev", cred: cred{sas: token(srLower("0ne99999999", "sym-dev"), symPK, hour, "registration")},
			reason: `the SAS token is for resource "0ne99999999/registrations/sym-dev"`},
		"fail/sas-group-primary-key-used-directly": {id: "grp-dev-1", cred: cred{sas: token(srLower(s, "grp-dev-1"), grpPK, hour, "registration")},
			reason: `is signed with a key of enrollment group "grp-sym" itself; a group key cannot authenticate a device`},
		"fail/sas-group-secondary-key-used-directly": {id: "grp-dev-2", cred: cred{sas: token(srLower(s, "grp-dev-2"), grpSK, hour, "")},
			reason: "a group key cannot authenticate a device"},
		"fail/sas-for-x509-enrollment": {id: "dev-x509-only", cred: cred{sas: token(srLower(s, "dev-x509-only"), otherKey, hour, "registration")},
			reason: `individual enrollment "dev-x509-only" uses x509 attestation, but the device sent a SAS token`},
		"fail/sas-malformed-no-sig": {id: "sym-dev", cred: cred{sas: "SharedAccessSignature sr=" + srLower(s, "sym-dev") + "&se=4102444800"},
			reason: "malformed SAS token: SAS token has no sig"},
		"fail/sas-malformed-not-a-sas": {id: "sym-dev", cred: cred{sas: "Bearer eyJhbGciOiJIUzI1NiJ9"},
			reason: `malformed SAS token: token does not start with "SharedAccessSignature "`},
		"fail/sas-malformed-sig-not-base64": {id: "sym-dev", cred: cred{sas: "SharedAccessSignature sr=" + srLower(s, "sym-dev") + "&sig=!!!&se=4102444800"},
			reason: "malformed SAS token: SAS token sig is not base64"},
		"fail/sas-malformed-se": {id: "sym-dev", cred: cred{sas: "SharedAccessSignature sr=" + srLower(s, "sym-dev") + "&sig=abcd&se=tomorrow"},
			reason: `malformed SAS token: SAS token se "tomorrow" is not a Unix time`},
		"fail/unknown-id-scope": {id: "sym-dev", scope: "0ne99999999", cred: cred{sas: token(srLower("0ne99999999", "sym-dev"), symPK, hour, "registration")},
			reason: `ID scope "0ne99999999" is not served here; this dpsd instance's ID scope is ` + s},
	}
}

// TestRefusals runs every refusal through the HTTPS device API in both
// modes: 401 401002 with a precise message on register, on the status lookup
// and on a poll, and nothing written. A disabled match answers 202 and a 200
// poll with status "disabled", and writes no registration record.
func TestRefusals(t *testing.T) {
	for _, mode := range []struct {
		name   string
		strict bool
	}{{"fast", false}, {"strict", true}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, options{strict: mode.strict})
			for name, tc := range refusalFixtures(t, h) {
				t.Run(name, func(t *testing.T) {
					scope := tc.scope
					if scope == "" {
						scope = h.Scope
					}
					before := h.snapshot(t)
					r := h.registerIn(t, tc.cred, scope, tc.id).must(t, "register")
					if tc.disabled {
						checkDisabled(t, h, tc, r, before)
						return
					}
					checkRefusal(t, r, http.StatusUnauthorized, dpserr.CodeUnauthorized, tc.reason)
					if loc := r.Header.Get("Location"); loc != "" {
						t.Errorf("refusal carries Location %q", loc)
					}
					if h.Scope == scope {
						// The status lookup and a poll authenticate the same way.
						checkRefusal(t, h.lookup(t, tc.cred, tc.id), http.StatusUnauthorized, dpserr.CodeUnauthorized, tc.reason)
						checkRefusal(t, h.poll(t, tc.cred, tc.id, "5.0123456789abcdef.00000000-0000-4000-8000-000000000000"), http.StatusUnauthorized, dpserr.CodeUnauthorized, tc.reason)
					}
					if after := h.snapshot(t); !sameStrings(before.Registrations, after.Registrations) || !sameStrings(before.Operations, after.Operations) {
						t.Errorf("a refusal changed the store:\n before %s\n after  %s", before, after)
					}
					h.noRecord(t, tc.id)
				})
			}
		})
	}
}

func checkDisabled(t *testing.T, h *harness, tc refusal, r *response, before snapshot) {
	t.Helper()
	if r.Status != http.StatusAccepted {
		t.Fatalf("register: %s, want 202", r)
	}
	checkHeaders(t, r)
	first := r.operation(t)
	w := want{regID: tc.id, status: dps.StatusDisabled, errorCode: dpserr.CodeUnauthorized, errorText: tc.reason}
	if h.Pipeline.Strict {
		if first.Status != dps.StatusAssigning || first.RegistrationState != nil {
			t.Errorf("strict register: status %q, registrationState %v; want assigning and none", first.Status, first.RegistrationState)
		}
	} else {
		if first.Status != dps.StatusDisabled {
			t.Fatalf("register: status %q, want disabled: %s", first.Status, r.Body)
		}
		checkResult(t, first.RegistrationState, w, time.Time{})
	}
	p := h.poll(t, tc.cred, tc.id, first.OperationID).must(t, "poll")
	if p.Status != http.StatusOK {
		t.Fatalf("poll: %s, want 200", p)
	}
	op := p.operation(t)
	if op.Status != dps.StatusDisabled {
		t.Fatalf("poll: status %q, want disabled: %s", op.Status, p.Body)
	}
	checkResult(t, op.RegistrationState, w, time.Time{})
	after := h.snapshot(t)
	if !sameStrings(before.Registrations, after.Registrations) {
		t.Errorf("a disabled enrollment wrote a registration record:\n before %s\n after  %s", before, after)
	}
	if len(after.Operations) != len(before.Operations)+1 {
		t.Errorf("operations: %d before, %d after; want one more (the disabled answer to poll)", len(before.Operations), len(after.Operations))
	}
	h.noRecord(t, tc.id)
	checkRefusal(t, h.lookup(t, tc.cred, tc.id), http.StatusNotFound, dpserr.CodeRegistrationNotFound, "has no registration record")
}
