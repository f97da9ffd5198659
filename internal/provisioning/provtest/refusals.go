package provtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// Refusal is a device the service must refuse, whatever the transport: the
// register request (and a poll) is answered with the DPS error JSON and
// writes nothing. Or, when Want.Terminal is "disabled", a device whose
// matching enrollment is disabled: the register request is accepted and its
// operation ends in status "disabled", and no registration record is
// written.
type Refusal struct {
	RegistrationID string
	// Scope is the ID scope the device addresses; "" for the instance's.
	Scope string
	Cred  Cred
	Want  Outcome
	// NotOver names the transports ("https", "mqtt", "mqtt-ws") the case
	// cannot apply to, with the reason. A suite skips the case there, saying
	// why, rather than drop it silently.
	NotOver map[string]string
}

// Outcome is what the service answers a Refusal.
type Outcome struct {
	// Status is the status of the answer to register: the HTTP status, or
	// the status in the MQTT response topic $dps/registrations/res/{status}/.
	// 401 for a refusal; 202 for a disabled enrollment (whose poll answers
	// 200 once terminal).
	Status int
	// ErrorCode is the errorCode of the error JSON, or of the
	// registrationState of a disabled enrollment.
	ErrorCode int
	// Reason is part of the error message (or of the errorMessage of the
	// registrationState).
	Reason string
	// Terminal is the terminal status of the operation, dps.StatusDisabled,
	// when the service accepts the request; "" for a refusal.
	Terminal string
}

// Refused is the outcome of a refusal: 401 401002 with reason.
func Refused(reason string) Outcome {
	return Outcome{Status: http.StatusUnauthorized, ErrorCode: dpserr.CodeUnauthorized, Reason: reason}
}

// Disabled is the outcome of a device whose matching enrollment is
// disabled: 202, status "disabled", errorCode 401002 and reason in the
// registrationState.
func Disabled(reason string) Outcome {
	return Outcome{Status: http.StatusAccepted, ErrorCode: dpserr.CodeUnauthorized, Reason: reason, Terminal: dps.StatusDisabled}
}

// Polled reports whether a poll presents the case's credentials: not when
// they are only a TPM's keys, which travel in a body a poll does not have.
func (r Refusal) Polled() bool {
	return r.Cred.Cert != nil || r.Cred.SAS != "" || r.Cred.TPM == nil
}

// Skip skips the test when the case cannot apply to transport, saying why.
func (r Refusal) Skip(t testing.TB, transport string) {
	t.Helper()
	if why, ok := r.NotOver[transport]; ok {
		t.Skipf("not over %s: %s", transport, why)
	}
}

// IDScope is the ID scope the device addresses on an instance whose ID
// scope is instance.
func (r Refusal) IDScope(instance string) string {
	if r.Scope != "" {
		return r.Scope
	}
	return instance
}

// Refusals sets the instance up — a linked hub, CA certificates, enrollment
// groups and individual enrollments, some disabled — and returns the
// devices it must refuse, by case name. The cases share the instance: each
// one's enrollments are there for all the others, as in a real fleet. It
// calls in.T's Fatal on a failure.
func Refusals(in Instance) map[string]Refusal {
	t := in.T
	t.Helper()
	now := time.Now()
	in.LinkHub(Hub1, 1, true)

	// A: verified root; the group is on the intermediate's certificate.
	rootA := in.VerifiedRoot("root-a", pki.Options{CommonName: "Root A"})
	interA := rootA.Intermediate(t, pki.Options{CommonName: "Intermediate A"})
	in.PutGroup(SigningGroup("grp-inter-a", interA.Cert))
	// B: a CA uploaded but not verified, referenced by a group.
	rootB := testutil.NewRoot(t, pki.Options{CommonName: "Root B"})
	in.UploadCA("root-b", rootB.Cert, false)
	in.PutGroup(CAGroup("grp-ca-b", "root-b"))
	interB := rootB.Intermediate(t, pki.Options{CommonName: "Intermediate B"})
	// C: a verified CA no group uses.
	rootC := in.VerifiedRoot("root-c", pki.Options{CommonName: "Root C"})
	// D: a verified CA referenced by a group; odd intermediates below it.
	rootD := in.VerifiedRoot("root-d", pki.Options{CommonName: "Root D"})
	in.PutGroup(CAGroup("grp-ca-d", "root-d"))
	notCA := rootD.Intermediate(t, pki.Options{CommonName: "Not A CA", IsCA: new(false)})
	serverOnlyInter := rootD.Intermediate(t, pki.Options{CommonName: "Server-Only Intermediate D", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	pathLenZero := rootD.Intermediate(t, pki.Options{CommonName: "PathLen0 Intermediate D", MaxPathLen: new(0)})
	belowPathLenZero := pathLenZero.Intermediate(t, pki.Options{CommonName: "Below PathLen0"})
	expiredInter := rootD.Intermediate(t, pki.Options{CommonName: "Expired Intermediate D", NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	// RSA CA for SHA-1 signatures.
	rootRSA := in.VerifiedRoot("root-rsa", pki.Options{CommonName: "Root RSA", KeyType: pki.KeyRSA2048})
	in.PutGroup(CAGroup("grp-rsa", "root-rsa"))
	sha1Inter := rootRSA.Intermediate(t, pki.Options{CommonName: "SHA-1 Intermediate", SignatureAlgorithm: x509.SHA1WithRSA, KeyType: pki.KeyRSA2048})
	// E: a disabled group on a verified CA.
	rootE := in.VerifiedRoot("root-e", pki.Options{CommonName: "Root E"})
	disabledGroup := CAGroup("grp-disabled", "root-e")
	disabledGroup.ProvisioningStatus = dps.ProvisioningDisabled
	in.PutGroup(disabledGroup)
	// F: an enabled group on the root, a disabled one on the intermediate:
	// the narrower, disabled entry decides.
	rootF := in.VerifiedRoot("root-f", pki.Options{CommonName: "Root F"})
	in.PutGroup(CAGroup("grp-root-f", "root-f"))
	interF := rootF.Intermediate(t, pki.Options{CommonName: "Intermediate F"})
	disabledInter := SigningGroup("grp-inter-f-disabled", interF.Cert)
	disabledInter.ProvisioningStatus = dps.ProvisioningDisabled
	in.PutGroup(disabledInter)
	// Rogue CAs whose subjects copy Intermediate A's, Root D's and Expired
	// Intermediate D's.
	rogue := testutil.NewRoot(t, pki.Options{CommonName: "Intermediate A"})
	rogueRootD := testutil.NewRoot(t, pki.Options{CommonName: "Root D"})
	rogueExpiredInter := testutil.NewRoot(t, pki.Options{CommonName: "Expired Intermediate D"})
	// G: a verified root without keyCertSign in its key usage, referenced
	// by a group.
	rootG := testutil.NewRoot(t, pki.Options{CommonName: "Root G No CertSign", KeyUsage: x509.KeyUsageDigitalSignature})
	in.UploadCA("root-g", rootG.Cert, true)
	in.PutGroup(CAGroup("grp-ca-g", "root-g"))

	// leafOf issues a device certificate under c; the device presents it
	// followed by chain.
	leafOf := func(c testutil.CA, cn string, o pki.Options, chain ...*x509.Certificate) Cred {
		o.CommonName = cn
		l, k := c.Leaf(t, o)
		return Cred{Cert: testutil.TLSCert(k, append([]*x509.Certificate{l}, chain...)...)}
	}

	// Weak keys, and a chain longer than dpsd accepts (eleven certificates).
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakInter := rootA.Intermediate(t, pki.Options{CommonName: "RSA-1024 Intermediate", Key: rsa1024})
	in.PutGroup(CAGroup("grp-ca-a", "root-a"))
	long, longChain := interA, []*x509.Certificate{interA.Cert}
	for i := range 9 {
		long = long.Intermediate(t, pki.Options{CommonName: fmt.Sprintf("Long %d", i)})
		longChain = append([]*x509.Certificate{long.Cert}, longChain...)
	}
	ssWeak, ssWeakKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-rsa1024-self", Key: rsa1024})
	in.PutIndividual(X509Individual("dev-rsa1024-self", ssWeak, nil))

	// Individual enrollments.
	ssOther, _ := testutil.SelfSigned(t, pki.Options{CommonName: "dev-other-cert"})
	in.PutIndividual(X509Individual("dev-other-cert", ssOther, nil))
	ssWrong, ssWrongKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-other-cert"})
	ssUnknown, ssUnknownKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-unknown"})
	sha1Self, sha1SelfKey := testutil.SelfSigned(t, pki.Options{CommonName: "dev-sha1-self", KeyType: pki.KeyRSA2048, SignatureAlgorithm: x509.SHA1WithRSA})
	in.PutIndividual(X509Individual("dev-sha1-self", sha1Self, nil))
	ssForSym, ssForSymKey := testutil.SelfSigned(t, pki.Options{CommonName: "sym-dev"})
	indDisabledLeaf, indDisabledKey := interA.Leaf(t, pki.Options{CommonName: "dev-ind-disabled"})
	indDisabled := X509Individual("dev-ind-disabled", indDisabledLeaf, nil)
	indDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	in.PutIndividual(indDisabled)
	ssX509, _ := testutil.SelfSigned(t, pki.Options{CommonName: "dev-x509-only"})
	in.PutIndividual(X509Individual("dev-x509-only", ssX509, nil))

	// Symmetric keys.
	symPK, _ := Keys(t, in.PutIndividual(SymIndividual("sym-dev")).Attestation)
	symDisabled := SymIndividual("sym-disabled")
	symDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	symDisabledPK, _ := Keys(t, in.PutIndividual(symDisabled).Attestation)
	grpPK, grpSK := Keys(t, in.PutGroup(SymGroup("grp-sym")).Attestation)
	symGrpDisabled := SymGroup("grp-sym-disabled")
	symGrpDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	grpDisabledPK, _ := Keys(t, in.PutGroup(symGrpDisabled).Attestation)
	otherKey := make([]byte, 32)
	rand.Read(otherKey)
	hour := now.Add(time.Hour)
	s := in.Scope

	// TPMs: two enrolled, one disabled, one with an ECC endorsement key
	// (which the activation cannot use), one unknown.
	tpmA, tpmB, tpmOff, tpmUnknown := NewTPM(0x11), NewTPM(0x22), NewTPM(0x33), NewTPM(0x44)
	in.PutIndividual(TPMIndividual("tpm-dev", tpmA.EK))
	in.PutIndividual(TPMIndividual("tpm-dev-b", tpmB.EK))
	tpmDisabled := TPMIndividual("tpm-disabled", tpmOff.EK)
	tpmDisabled.ProvisioningStatus = dps.ProvisioningDisabled
	in.PutIndividual(tpmDisabled)
	eccEK := tpm2.ECCEKTemplate
	eccEK.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)}, Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)}})
	tpmECC := TPM{EK: tpm2.Marshal(tpm2.New2B(eccEK)), SRK: tpmA.SRK}
	in.PutIndividual(TPMIndividual("tpm-ecc", tpmECC.EK))
	tpmSAS := in.TPMToken("tpm-dev", tpmA.EK, now, hour)
	tampered := strings.Replace(tpmSAS, "&se="+strconv.FormatInt(hour.Unix(), 10), "&se="+strconv.FormatInt(hour.Unix()+1, 10), 1)
	onlyEK := &dps.TPMAttestation{EndorsementKey: tpmA.Keys().EndorsementKey}
	notSigned := `the SAS token is not signed with the key of a TPM challenge issued to registration "tpm-dev" in the last 2h0m0s`
	httpsOnly := map[string]string{"mqtt": "TPM attestation is HTTPS only (fail/tpm-*-over-mqtt)", "mqtt-ws": "TPM attestation is HTTPS only (fail/tpm-*-over-mqtt)"}
	overMQTT := map[string]string{"https": "an MQTT case"}
	const mqttRefusal = "TPM attestation is not offered over MQTT: Azure DPS does not offer it over MQTT either"

	return map[string]Refusal{
		// X.509: the leaf itself.
		"fail/expired-leaf": {RegistrationID: "dev-expired", Cred: leafOf(interA, "dev-expired", pki.Options{NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(-24 * time.Hour)}, interA.Cert),
			Want: Refused("certificate CN=dev-expired expired at")},
		"fail/not-yet-valid-leaf": {RegistrationID: "dev-future", Cred: leafOf(interA, "dev-future", pki.Options{NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(72 * time.Hour)}, interA.Cert),
			Want: Refused("certificate CN=dev-future is not valid before")},
		"fail/cn-differs-from-registration-id": {RegistrationID: "dev-cn-b", Cred: leafOf(interA, "dev-cn-a", pki.Options{}, interA.Cert),
			Want: Refused(`certificate CN "dev-cn-a" does not match registration ID "dev-cn-b"`)},
		"fail/leaf-server-auth-only": {RegistrationID: "dev-server-auth", Cred: leafOf(interA, "dev-server-auth", pki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, interA.Cert),
			Want: Refused("is not valid for client authentication: its extended key usage is serverAuth")},
		"fail/sha1-leaf": {RegistrationID: "dev-sha1", Cred: leafOf(rootRSA, "dev-sha1", pki.Options{SignatureAlgorithm: x509.SHA1WithRSA}, rootRSA.Cert),
			Want: Refused("is signed with SHA1-RSA; dpsd does not accept SHA-1")},
		"fail/sha1-self-signed-individual": {RegistrationID: "dev-sha1-self", Cred: Cred{Cert: testutil.TLSCert(sha1SelfKey, sha1Self)},
			Want: Refused("dpsd does not accept SHA-1")},
		"fail/leaf-rsa-1024": {RegistrationID: "dev-rsa1024", Cred: leafOf(interA, "dev-rsa1024", pki.Options{Key: rsa1024}, interA.Cert),
			Want: Refused("certificate CN=dev-rsa1024 has a 1024-bit RSA key; dpsd accepts RSA keys of at least 2048 bits")},
		"fail/self-signed-individual-rsa-1024": {RegistrationID: "dev-rsa1024-self", Cred: Cred{Cert: testutil.TLSCert(ssWeakKey, ssWeak)},
			Want: Refused("certificate CN=dev-rsa1024-self has a 1024-bit RSA key")},
		"fail/leaf-is-a-ca": {RegistrationID: "dev-ca-true", Cred: leafOf(interA, "dev-ca-true", pki.Options{IsCA: new(true)}, interA.Cert),
			Want: Refused("certificate CN=dev-ca-true is a CA certificate (basic constraints CA:TRUE) and cannot authenticate a device")},
		"fail/intermediate-rsa-1024": {RegistrationID: "dev-weak-inter", Cred: leafOf(weakInter, "dev-weak-inter", pki.Options{}, weakInter.Cert),
			Want: Refused("CA certificate CN=RSA-1024 Intermediate has a 1024-bit RSA key")},
		"fail/chain-too-long": {RegistrationID: "dev-long", Cred: leafOf(long, "dev-long", pki.Options{}, longChain...),
			Want: Refused("the device presented 11 certificates; at most 10 are accepted")},
		// X.509: individual enrollments.
		"fail/unknown-self-signed": {RegistrationID: "dev-unknown", Cred: Cred{Cert: testutil.TLSCert(ssUnknownKey, ssUnknown)},
			Want: Refused("self-signed certificate (SHA-256 thumbprint " + pki.SHA256Thumbprint(ssUnknown) + ") is not enrolled")},
		"fail/individual-enrollment-other-certificate": {RegistrationID: "dev-other-cert", Cred: Cred{Cert: testutil.TLSCert(ssWrongKey, ssWrong)},
			Want: Refused(`is neither the primary nor the secondary certificate of individual enrollment "dev-other-cert"`)},
		"fail/certificate-for-symmetric-key-enrollment": {RegistrationID: "sym-dev", Cred: Cred{Cert: testutil.TLSCert(ssForSymKey, ssForSym)},
			Want: Refused(`individual enrollment "sym-dev" uses symmetricKey attestation`)},
		// X.509: chains.
		"fail/chain-missing-intermediate": {RegistrationID: "dev-no-inter", Cred: leafOf(interB, "dev-no-inter", pki.Options{}),
			Want: Refused("the issuer of its certificate (CN=Intermediate B) is neither a verified CA certificate nor the signing certificate of an enrollment group")},
		"fail/chain-stops-below-missing-intermediate": {RegistrationID: "dev-no-root", Cred: leafOf(belowPathLenZero, "dev-no-root", pki.Options{}, belowPathLenZero.Cert),
			Want: Refused("the issuer of its last certificate (CN=PathLen0 Intermediate D) is neither")},
		"fail/leaf-only-forged-issuer": {RegistrationID: "dev-forged-alone", Cred: leafOf(rogue, "dev-forged-alone", pki.Options{}),
			Want: Refused("names CN=Intermediate A as its issuer, but was not signed with the key of the stored certificate of that name")},
		"fail/leaf-only-under-unverified-ca": {RegistrationID: "dev-unverified-alone", Cred: leafOf(rootB, "dev-unverified-alone", pki.Options{}),
			Want: Refused(`reaches CA certificate "root-b" (CN=Root B), which is not verified`)},
		"fail/ca-without-key-cert-sign": {RegistrationID: "dev-no-certsign", Cred: leafOf(rootG, "dev-no-certsign", pki.Options{}),
			Want: Refused("its key usage does not allow signing certificates (keyCertSign missing)")},
		"fail/chain-to-unverified-ca": {RegistrationID: "dev-unverified", Cred: leafOf(rootB, "dev-unverified", pki.Options{}, rootB.Cert),
			Want: Refused(`reaches CA certificate "root-b" (CN=Root B), which is not verified`)},
		"fail/chain-to-unverified-ca-through-intermediate": {RegistrationID: "dev-unverified-2", Cred: leafOf(interB, "dev-unverified-2", pki.Options{}, interB.Cert, rootB.Cert),
			Want: Refused(`"root-b" (CN=Root B), which is not verified`)},
		"fail/chain-to-verified-ca-no-group-uses": {RegistrationID: "dev-root-c", Cred: leafOf(rootC, "dev-root-c", pki.Options{}, rootC.Cert),
			Want: Refused(`reaches verified CA certificate "root-c", but no enrollment group uses it`)},
		"fail/chain-forged-with-another-groups-ca": {RegistrationID: "dev-forged", Cred: leafOf(rogue, "dev-forged", pki.Options{}, interA.Cert),
			Want: Refused("the signature of certificate CN=dev-forged does not verify with the key of CN=Intermediate A")},
		"fail/intermediate-without-ca-true": {RegistrationID: "dev-not-ca", Cred: leafOf(notCA, "dev-not-ca", pki.Options{}, notCA.Cert, rootD.Cert),
			Want: Refused("certificate CN=Not A CA signs CN=dev-not-ca but is not a CA certificate (basic constraints CA:TRUE missing)")},
		"fail/intermediate-eku-excludes-client-auth": {RegistrationID: "dev-eku-inter", Cred: leafOf(serverOnlyInter, "dev-eku-inter", pki.Options{}, serverOnlyInter.Cert, rootD.Cert),
			Want: Refused("certificate chain does not verify")},
		"fail/path-length-constraint-exceeded": {RegistrationID: "dev-pathlen", Cred: leafOf(belowPathLenZero, "dev-pathlen", pki.Options{}, belowPathLenZero.Cert, pathLenZero.Cert, rootD.Cert),
			Want: Refused("certificate chain does not verify")},
		// A presented certificate that did not sign the one below it, where
		// crypto/x509 alone would build a path around it (the leaf is Root
		// D's): every presented link must verify.
		"fail/chain-through-a-rogue-copy-of-its-ca": {RegistrationID: "dev-rogue-middle", Cred: leafOf(rootD, "dev-rogue-middle", pki.Options{}, rogueRootD.Cert, rootD.Cert),
			Want: Refused("the signature of certificate CN=dev-rogue-middle does not verify with the key of CN=Root D")},
		// A forged signature is named before a later fault of the chain.
		"fail/forged-below-expired-intermediate": {RegistrationID: "dev-forged-expired", Cred: leafOf(rogueExpiredInter, "dev-forged-expired", pki.Options{}, expiredInter.Cert, rootD.Cert),
			Want: Refused("the signature of certificate CN=dev-forged-expired does not verify with the key of CN=Expired Intermediate D")},
		"fail/expired-intermediate": {RegistrationID: "dev-expired-inter", Cred: leafOf(expiredInter, "dev-expired-inter", pki.Options{}, expiredInter.Cert, rootD.Cert),
			Want: Refused("CA certificate CN=Expired Intermediate D expired at")},
		"fail/sha1-intermediate": {RegistrationID: "dev-sha1-inter", Cred: leafOf(sha1Inter, "dev-sha1-inter", pki.Options{}, sha1Inter.Cert, rootRSA.Cert),
			Want: Refused("certificate CN=SHA-1 Intermediate is signed with SHA1-RSA")},
		// Disabled matches.
		"disabled/individual-enrollment-overrides-enabled-group": {RegistrationID: "dev-ind-disabled", Cred: Cred{Cert: testutil.TLSCert(indDisabledKey, indDisabledLeaf, interA.Cert)},
			Want: Disabled(`enrollment "dev-ind-disabled" is disabled`)},
		"disabled/group": {RegistrationID: "dev-grp-disabled", Cred: leafOf(rootE, "dev-grp-disabled", pki.Options{}, rootE.Cert),
			Want: Disabled(`enrollment group "grp-disabled" is disabled`)},
		"disabled/intermediate-group-blocks-enabled-root-group": {RegistrationID: "dev-inter-f", Cred: leafOf(interF, "dev-inter-f", pki.Options{}, interF.Cert, rootF.Cert),
			Want: Disabled(`enrollment group "grp-inter-f-disabled" is disabled`)},
		"disabled/symmetric-key-individual": {RegistrationID: "sym-disabled", Cred: Cred{SAS: in.DeviceToken("sym-disabled", symDisabledPK)},
			Want: Disabled(`enrollment "sym-disabled" is disabled`)},
		"disabled/symmetric-key-group": {RegistrationID: "grp-disabled-dev", Cred: Cred{SAS: in.DeviceToken("grp-disabled-dev", sas.DeriveDeviceKey(grpDisabledPK, "grp-disabled-dev"))},
			Want: Disabled(`enrollment group "grp-sym-disabled" is disabled`)},
		// No credentials.
		"fail/no-certificate-and-no-sas": {RegistrationID: "dev-anonymous",
			Want: Refused("no credentials: present the device certificate")},
		// SAS tokens.
		"fail/sas-expired": {RegistrationID: "sym-dev", Cred: Cred{SAS: Token(SRLower(s, "sym-dev"), symPK, now.Add(-time.Minute), "registration")},
			Want: Refused("the SAS token expired at")},
		"fail/sas-wrong-key": {RegistrationID: "sym-dev", Cred: Cred{SAS: Token(SRLower(s, "sym-dev"), otherKey, hour, "registration")},
			Want: Refused(`the SAS token signature matches neither the primary nor the secondary key of individual enrollment "sym-dev"`)},
		"fail/sas-group-device-wrong-key": {RegistrationID: "grp-dev-x", Cred: Cred{SAS: Token(SRLower(s, "grp-dev-x"), sas.DeriveDeviceKey(otherKey, "grp-dev-x"), hour, "registration")},
			Want: Refused(`matches no individual enrollment for registration ID "grp-dev-x" and no key derived from a symmetric-key enrollment group`)},
		"fail/sas-key-derived-for-another-device": {RegistrationID: "grp-dev-y", Cred: Cred{SAS: Token(SRLower(s, "grp-dev-y"), sas.DeriveDeviceKey(grpPK, "grp-dev-z"), hour, "registration")},
			Want: Refused("matches no individual enrollment")},
		"fail/sas-sr-another-registration-id": {RegistrationID: "sym-dev", Cred: Cred{SAS: Token(SRLower(s, "sym-dev-2"), symPK, hour, "registration")},
			Want: Refused(`the SAS token is for resource "` + s + `/registrations/sym-dev-2", not "` + s + `/registrations/sym-dev"`)},
		"fail/sas-sr-another-scope": {RegistrationID: "sym-dev", Cred: Cred{SAS: Token(SRLower("0ne99999999", "sym-dev"), symPK, hour, "registration")},
			Want: Refused(`the SAS token is for resource "0ne99999999/registrations/sym-dev"`)},
		"fail/sas-group-primary-key-used-directly": {RegistrationID: "grp-dev-1", Cred: Cred{SAS: Token(SRLower(s, "grp-dev-1"), grpPK, hour, "registration")},
			Want: Refused(`is signed with a key of enrollment group "grp-sym" itself; a group key cannot authenticate a device`)},
		"fail/sas-group-secondary-key-used-directly": {RegistrationID: "grp-dev-2", Cred: Cred{SAS: Token(SRLower(s, "grp-dev-2"), grpSK, hour, "")},
			Want: Refused("a group key cannot authenticate a device")},
		"fail/sas-for-x509-enrollment": {RegistrationID: "dev-x509-only", Cred: Cred{SAS: Token(SRLower(s, "dev-x509-only"), otherKey, hour, "registration")},
			Want: Refused(`individual enrollment "dev-x509-only" uses x509 attestation, but the device sent a SAS token`)},
		"fail/sas-malformed-no-sig": {RegistrationID: "sym-dev", Cred: Cred{SAS: "SharedAccessSignature sr=" + SRLower(s, "sym-dev") + "&se=4102444800"},
			Want: Refused("malformed SAS token: SAS token has no sig")},
		"fail/sas-malformed-not-a-sas": {RegistrationID: "sym-dev", Cred: Cred{SAS: "Bearer eyJhbGciOiJIUzI1NiJ9"},
			Want: Refused(`malformed SAS token: token does not start with "SharedAccessSignature "`)},
		"fail/sas-malformed-sig-not-base64": {RegistrationID: "sym-dev", Cred: Cred{SAS: "SharedAccessSignature sr=" + SRLower(s, "sym-dev") + "&sig=!!!&se=4102444800"},
			Want: Refused("malformed SAS token: SAS token sig is not base64")},
		"fail/sas-expiry-after-year-9999": {RegistrationID: "sym-dev", Cred: Cred{SAS: "SharedAccessSignature sr=" + SRLower(s, "sym-dev") + "&sig=abcd&se=9223372036854775807"},
			Want: Refused("malformed SAS token: SAS token se 9223372036854775807 is after the year 9999")},
		"fail/sas-malformed-se": {RegistrationID: "sym-dev", Cred: Cred{SAS: "SharedAccessSignature sr=" + SRLower(s, "sym-dev") + "&sig=abcd&se=tomorrow"},
			Want: Refused(`malformed SAS token: SAS token se "tomorrow" is not a Unix time`)},
		// TPM.
		"fail/tpm-unknown-registration-id": {RegistrationID: "tpm-unknown", Cred: Cred{TPM: tpmUnknown.Keys()}, NotOver: httpsOnly,
			Want: Outcome{Status: http.StatusNotFound, ErrorCode: dpserr.CodeEnrollmentNotFound,
				Reason: `no individual enrollment for registration ID "tpm-unknown" (this TPM's default registration ID, derived from its endorsement key, is "` + tpmUnknown.RegistrationID() + `")`}},
		"fail/tpm-endorsement-key-mismatch": {RegistrationID: "tpm-dev", Cred: Cred{TPM: tpmB.Keys()}, NotOver: httpsOnly,
			Want: Refused(`the endorsement key the device sent is not the one of individual enrollment "tpm-dev": the device's TPM has default registration ID "` + tpmB.RegistrationID() + `"`)},
		"fail/tpm-keys-for-x509-enrollment": {RegistrationID: "dev-x509-only", Cred: Cred{TPM: tpmA.Keys()}, NotOver: httpsOnly,
			Want: Refused(`individual enrollment "dev-x509-only" uses x509 attestation, but the device sent a TPM endorsement key`)},
		"fail/tpm-endorsement-key-malformed": {RegistrationID: "tpm-dev", Cred: Cred{TPM: &dps.TPMAttestation{EndorsementKey: "AAECAw==", StorageRootKey: tpmA.Keys().StorageRootKey}}, NotOver: httpsOnly,
			Want: Outcome{Status: http.StatusBadRequest, ErrorCode: dpserr.CodeInvalidArgument, Reason: "tpm.endorsementKey: malformed TPM public key"}},
		"fail/tpm-without-storage-root-key": {RegistrationID: "tpm-dev", Cred: Cred{TPM: onlyEK}, NotOver: httpsOnly,
			Want: Outcome{Status: http.StatusBadRequest, ErrorCode: dpserr.CodeInvalidArgument, Reason: "tpm.storageRootKey is missing"}},
		"fail/tpm-ecc-endorsement-key": {RegistrationID: "tpm-ecc", Cred: Cred{TPM: tpmECC.Keys()}, NotOver: httpsOnly,
			Want: Outcome{Status: http.StatusBadRequest, ErrorCode: dpserr.CodeInvalidArgument, Reason: "the endorsement key is an ECC-NIST-P256 key; TPM attestation needs an RSA-2048 key"}},
		"fail/tpm-sas-tampered": {RegistrationID: "tpm-dev", Cred: Cred{SAS: tampered, TPM: tpmA.Keys()}, NotOver: httpsOnly,
			Want: Refused(notSigned)},
		"fail/tpm-sas-another-devices-challenge-key": {RegistrationID: "tpm-dev", Cred: Cred{SAS: Token(SRUpper(s, "tpm-dev"), in.TPMChallengeKey("tpm-dev-b", tpmB.EK, now), hour, "registration"), TPM: tpmA.Keys()}, NotOver: httpsOnly,
			Want: Refused(notSigned)},
		"fail/tpm-sas-without-challenge": {RegistrationID: "tpm-dev", Cred: Cred{SAS: Token(SRUpper(s, "tpm-dev"), otherKey, hour, "registration"), TPM: tpmA.Keys()}, NotOver: httpsOnly,
			Want: Refused(notSigned)},
		"fail/tpm-challenge-expired": {RegistrationID: "tpm-dev", Cred: Cred{SAS: in.TPMToken("tpm-dev", tpmA.EK, now.Add(-3*time.Hour), hour), TPM: tpmA.Keys()}, NotOver: httpsOnly,
			Want: Refused(`the SAS token is signed with the key of a TPM challenge issued to registration "tpm-dev" between`)},
		"fail/tpm-sas-expired": {RegistrationID: "tpm-dev", Cred: Cred{SAS: in.TPMToken("tpm-dev", tpmA.EK, now, now.Add(-time.Minute)), TPM: tpmA.Keys()}, NotOver: httpsOnly,
			Want: Refused("the SAS token expired at")},
		"fail/tpm-keys-over-mqtt": {RegistrationID: "tpm-dev", Cred: Cred{TPM: tpmA.Keys()}, NotOver: overMQTT,
			Want: Refused(mqttRefusal)},
		"fail/tpm-sas-over-mqtt": {RegistrationID: "tpm-dev-b", Cred: Cred{SAS: in.TPMToken("tpm-dev-b", tpmB.EK, now, hour)}, NotOver: overMQTT,
			Want: Refused(mqttRefusal)},
		"disabled/tpm-individual": {RegistrationID: "tpm-disabled", Cred: Cred{SAS: in.TPMToken("tpm-disabled", tpmOff.EK, now, hour), TPM: tpmOff.Keys()}, NotOver: httpsOnly,
			Want: Disabled(`enrollment "tpm-disabled" is disabled`)},
		"fail/unknown-id-scope": {RegistrationID: "sym-dev", Scope: "0ne99999999", Cred: Cred{SAS: Token(SRLower("0ne99999999", "sym-dev"), symPK, hour, "registration")},
			Want: Refused(`ID scope "0ne99999999" is not served here; this dpsd instance's ID scope is ` + s)},
	}
}

// CheckError checks the DPS error JSON of an answer with status: errorCode
// code, whose first three digits are status; reason in the message; a
// trackingId (a UUID: a transport may tie it to more, as HTTPS does to
// x-ms-request-id); timestampUtc about now. It returns the decoded details.
func CheckError(t testing.TB, body []byte, status, code int, reason string) *dps.ErrorDetails {
	t.Helper()
	var e dps.ErrorDetails
	StrictDecode(t, body, &e)
	if e.ErrorCode != code {
		t.Errorf("errorCode = %d, want %d (message %q)", e.ErrorCode, code, e.Message)
	}
	if e.ErrorCode/1000 != status {
		t.Errorf("errorCode %d does not start with the status %d", e.ErrorCode, status)
	}
	if !strings.Contains(e.Message, reason) {
		t.Errorf("message %q does not contain %q", e.Message, reason)
	}
	if !IsUUID(e.TrackingID) {
		t.Errorf("trackingId = %q, want a UUID", e.TrackingID)
	}
	if e.TimestampUtc == nil || time.Since(e.TimestampUtc.Time) > time.Minute {
		t.Errorf("timestampUtc = %v, want about now", e.TimestampUtc)
	}
	return &e
}

// CheckTerminal checks a terminal operation status against r.Want: status
// Terminal, and a registrationState of the device with that status, no hub
// and no device ID, errorCode ErrorCode and Reason in the errorMessage.
func (r Refusal) CheckTerminal(t testing.TB, op *dps.RegistrationOperationStatus) {
	t.Helper()
	if op.Status != r.Want.Terminal {
		t.Fatalf("status = %q, want %q", op.Status, r.Want.Terminal)
	}
	rs := op.RegistrationState
	if rs == nil {
		t.Fatal("registrationState is missing")
	}
	if !strings.EqualFold(rs.RegistrationID, r.RegistrationID) {
		t.Errorf("registrationId = %q, want %q", rs.RegistrationID, r.RegistrationID)
	}
	if rs.Status != r.Want.Terminal {
		t.Errorf("registrationState.status = %q, want %q (errorCode %d, errorMessage %q)", rs.Status, r.Want.Terminal, rs.ErrorCode, rs.ErrorMessage)
	}
	if rs.AssignedHub != "" || rs.DeviceID != "" {
		t.Errorf("%s with assignedHub %q, deviceId %q; want neither", rs.Status, rs.AssignedHub, rs.DeviceID)
	}
	if rs.ErrorCode != r.Want.ErrorCode {
		t.Errorf("errorCode = %d, want %d", rs.ErrorCode, r.Want.ErrorCode)
	}
	if !strings.Contains(rs.ErrorMessage, r.Want.Reason) {
		t.Errorf("errorMessage = %q, want it to contain %q", rs.ErrorMessage, r.Want.Reason)
	}
}
