package provtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// IssuingCA generates an issuing CA and stores it as the service API does.
func (in Instance) IssuingCA(name string) *store.IssuingCA {
	in.T.Helper()
	c, err := issuance.Generate(name, issuance.GenerateOptions{})
	in.must(err, "issuance.Generate", name)
	in.must(issuance.Policy{}.Apply(c), "Policy.Apply", name)
	stored, err := in.Store.PutIssuingCA(context.Background(), c, "*")
	in.must(err, "PutIssuingCA", name)
	return stored
}

// DeviceKey makes a device's P-256 key.
func DeviceKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// CSRDER is a certificate signing request for subject, signed by key.
func CSRDER(t testing.TB, key crypto.Signer, subject pkix.Name) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// CSR is the csr member of a register body: base64 of the DER request for
// CN=cn, signed by key.
func CSR(t testing.TB, key crypto.Signer, cn string) string {
	t.Helper()
	return base64.StdEncoding.EncodeToString(CSRDER(t, key, pkix.Name{CommonName: cn}))
}

// CSRCase is a register request carrying a certificate request, and what
// the service answers it.
type CSRCase struct {
	RegistrationID string
	Cred           Cred
	// CSR and ClientCSR are the body's csr and clientCertificateCsr.
	CSR, ClientCSR string
	Want           Outcome
}

// Body is the register body of c.
func (c CSRCase) Body() []byte {
	b, _ := json.Marshal(dps.DeviceRegistration{RegistrationID: c.RegistrationID, CSR: c.CSR, ClientCertificateCSR: c.ClientCSR})
	return b
}

// BadRequest is the outcome of a CSR that cannot be honoured: 400 400004
// with reason, and nothing written.
func BadRequest(reason string) Outcome {
	return Outcome{Status: http.StatusBadRequest, ErrorCode: dpserr.CodeInvalidArgument, Reason: reason}
}

// CSRRefusals sets the instance up — a linked hub, issuing CAs, enrollments
// that issue and some that cannot — and returns the register requests with
// a CSR it must refuse, by case name: every rule a CSR breaks, and every
// reason the enrollment cannot issue. None writes anything.
func CSRRefusals(in Instance) map[string]CSRCase {
	t := in.T
	t.Helper()
	in.LinkHub(Hub1, 1, true)
	in.IssuingCA("csr-ca")
	withCA := func(e *dps.IndividualEnrollment, ca string) *dps.IndividualEnrollment {
		e.CredentialPolicyName = ca
		return e
	}
	pk, _ := Keys(t, in.PutIndividual(withCA(SymIndividual("csr-dev"), "csr-ca")).Attestation)
	noIssuerPK, _ := Keys(t, in.PutIndividual(SymIndividual("csr-no-issuer")).Attestation)
	in.IssuingCA("gone-ca")
	gonePK, _ := Keys(t, in.PutIndividual(withCA(SymIndividual("csr-gone-ca"), "gone-ca")).Attestation)
	in.must(in.Store.DeleteIssuingCA(context.Background(), "gone-ca", ""), "DeleteIssuingCA", "gone-ca")
	// An expired CA, stored as an older dpsd would have kept it.
	old, oldKey, err := pki.NewRootCA(pki.Options{CommonName: "Old CA", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	in.must(err, "NewRootCA", "old-ca")
	oldPEM, err := pki.MarshalPrivateKeyPEM(oldKey, nil)
	in.must(err, "MarshalPrivateKeyPEM", "old-ca")
	_, err = in.Store.PutIssuingCA(context.Background(), &store.IssuingCA{Name: "old-ca", CertificateDER: old.Raw, PrivateKeyPEM: oldPEM,
		Origin: store.OriginImported, CertificateValidityDays: 30, ExtendedKeyUsages: []string{issuance.EKUClientAuth}}, "*")
	in.must(err, "PutIssuingCA", "old-ca")
	oldPK, _ := Keys(t, in.PutIndividual(withCA(SymIndividual("csr-old-ca"), "old-ca")).Attestation)

	key := DeviceKey(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	in.must(err, "rsa.GenerateKey", "1024")
	good := CSRDER(t, key, pkix.Name{CommonName: "csr-dev"})
	tampered := append([]byte{}, good...)
	tampered[len(tampered)-3] ^= 0x55
	b64 := base64.StdEncoding.EncodeToString
	goodPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good}))
	dev := Cred{SAS: in.DeviceToken("csr-dev", pk)}
	otherKey := make([]byte, 32)
	rand.Read(otherKey)

	return map[string]CSRCase{
		"fail/csr-cn-differs": {RegistrationID: "csr-dev", Cred: dev, CSR: CSR(t, key, "csr-other"),
			Want: BadRequest(`the subject CN "csr-other" of csr does not match registration ID "csr-dev"`)},
		"fail/csr-without-cn": {RegistrationID: "csr-dev", Cred: dev, CSR: b64(CSRDER(t, key, pkix.Name{Organization: []string{"Contoso"}})),
			Want: BadRequest("the subject of csr has no CN")},
		"fail/csr-bad-signature": {RegistrationID: "csr-dev", Cred: dev, CSR: b64(tampered),
			Want: BadRequest("the signature of csr does not verify with the key it carries")},
		"fail/csr-weak-key": {RegistrationID: "csr-dev", Cred: dev, CSR: CSR(t, rsa1024, "csr-dev"),
			Want: BadRequest("the key of csr is a 1024-bit RSA key")},
		"fail/csr-not-base64": {RegistrationID: "csr-dev", Cred: dev, CSR: "MIIC*not base64*",
			Want: BadRequest("csr is not base64")},
		"fail/csr-pem-armour": {RegistrationID: "csr-dev", Cred: dev, CSR: goodPEM,
			Want: BadRequest("csr must be the base64 of the DER request without PEM armour")},
		"fail/csr-oversized": {RegistrationID: "csr-dev", Cred: dev, CSR: strings.Repeat("QUFB", 2100),
			Want: BadRequest("csr is 8400 characters long; dpsd accepts CSRs of at most 8192")},
		"fail/csr-not-a-request": {RegistrationID: "csr-dev", Cred: dev, CSR: b64([]byte("not a certificate request")),
			Want: BadRequest("csr is not a PKCS#10 certificate signing request")},
		"fail/csr-and-client-csr": {RegistrationID: "csr-dev", Cred: dev, CSR: b64(good), ClientCSR: b64(good),
			Want: BadRequest("carries both csr and clientCertificateCsr")},
		"fail/client-csr-cn-differs": {RegistrationID: "csr-dev", Cred: dev, ClientCSR: CSR(t, key, "csr-other"),
			Want: BadRequest(`the subject CN "csr-other" of clientCertificateCsr does not match`)},
		"fail/enrollment-issues-no-certificates": {RegistrationID: "csr-no-issuer", Cred: Cred{SAS: in.DeviceToken("csr-no-issuer", noIssuerPK)}, CSR: CSR(t, key, "csr-no-issuer"),
			Want: BadRequest(`enrollment "csr-no-issuer" does not issue certificates: it names no issuing CA`)},
		"fail/issuing-ca-deleted": {RegistrationID: "csr-gone-ca", Cred: Cred{SAS: in.DeviceToken("csr-gone-ca", gonePK)}, CSR: CSR(t, key, "csr-gone-ca"),
			Want: BadRequest(`enrollment "csr-gone-ca" names issuing CA "gone-ca", which this instance no longer has`)},
		"fail/issuing-ca-expired": {RegistrationID: "csr-old-ca", Cred: Cred{SAS: in.DeviceToken("csr-old-ca", oldPK)}, CSR: CSR(t, key, "csr-old-ca"),
			Want: BadRequest(`enrollment "csr-old-ca" names issuing CA "old-ca", which cannot issue: CN=Old CA expired at`)},
		// The credentials are checked as ever.
		"fail/good-csr-wrong-key": {RegistrationID: "csr-dev", Cred: Cred{SAS: in.DeviceToken("csr-dev", otherKey)}, CSR: b64(good),
			Want: Refused(`the SAS token signature matches neither the primary nor the secondary key of individual enrollment "csr-dev"`)},
	}
}
