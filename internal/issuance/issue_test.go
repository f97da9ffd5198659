package issuance

import (
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/testutil"
)

func mustParse(t *testing.T, field, value, registrationID string) *CSR {
	t.Helper()
	c, err := Parse(field, value, registrationID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifies(t *testing.T, chain [][]byte) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(certs[len(certs)-1])
	for _, c := range certs[1 : len(certs)-1] {
		inters.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the issued chain does not verify: %v", err)
	}
	return certs[0]
}

func TestIssue(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	ca, err := Generate("Line-3", GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := (Policy{CertificateValidityDays: 10, ExtendedKeyUsages: []string{EKUServerAuth}}).Apply(ca); err != nil {
		t.Fatal(err)
	}
	devKey := rsaKey(t, 2048)
	csr := mustParse(t, FieldCSR, b64(csrDER(t, devKey, pkix.Name{CommonName: "Dev-1", Organization: []string{"Asked For"}}, 0)), "dev-1")
	is := &Issuer{CRLBaseURL: "https://dps.example.com:8443/", Now: func() time.Time { return now }}
	got, err := is.Issue(ca, csr, "dev-1", "Fleet")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Chain) != 2 || !slices.Equal(got.Chain[1], ca.CertificateDER) {
		t.Fatalf("chain of %d, want the certificate and the CA", len(got.Chain))
	}
	leaf := verifies(t, got.Chain)
	r := got.Record
	if r.SerialNumber != pki.SerialNumber(leaf) || r.SHA256Thumbprint != pki.SHA256Thumbprint(leaf) || r.RegistrationID != "dev-1" ||
		r.EnrollmentGroupID != "Fleet" || r.IssuingCA != "Line-3" || !slices.Equal(r.CertificateDER, leaf.Raw) ||
		!r.NotBefore.Equal(leaf.NotBefore) || !r.NotAfter.Equal(leaf.NotAfter) {
		t.Fatalf("record %+v does not describe the certificate", r)
	}
	if pki.DistinguishedName(leaf.RawSubject) != "CN=Dev-1" || !pki.KeyMatches(devKey, leaf.PublicKey) || leaf.IsCA ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}) ||
		!slices.Equal(leaf.CRLDistributionPoints, []string{"https://dps.example.com:8443/crl/Line-3.crl"}) {
		t.Fatalf("issued %s, key matches %v, CA %v, EKU %v, CRL %q", pki.DistinguishedName(leaf.RawSubject), pki.KeyMatches(devKey, leaf.PublicKey), leaf.IsCA, leaf.ExtKeyUsage, leaf.CRLDistributionPoints)
	}
	if !leaf.NotBefore.Equal(now.Add(-backdate)) || !leaf.NotAfter.Equal(now.Add(10*24*time.Hour)) {
		t.Fatalf("valid %s to %s, want from a minute ago for 10 days", leaf.NotBefore, leaf.NotAfter)
	}

	var res dps.DeviceRegistrationResult
	got.Deliver(&res)
	if res.IssuedClientCertificate != "" || len(res.IssuedCertificateChain) != 2 {
		t.Fatalf("csr answered with %+v", res)
	}
	for i, s := range res.IssuedCertificateChain {
		if der, err := base64.StdEncoding.DecodeString(s); err != nil || !slices.Equal(der, got.Chain[i]) {
			t.Fatalf("issuedCertificateChain[%d] is not the base64 DER of the chain", i)
		}
	}

	// No CRL distribution point without a base URL.
	got, err = (&Issuer{}).Issue(ca, csr, "dev-1", "")
	if err != nil {
		t.Fatal(err)
	}
	if leaf := verifies(t, got.Chain); len(leaf.CRLDistributionPoints) != 0 {
		t.Fatalf("CRL distribution points %q without a base URL", leaf.CRLDistributionPoints)
	}
}

// TestIssueUnderIntermediate: an imported intermediate hands out its chain
// up to the root; the 2021-11-01-preview answer is PEM without the root.
func TestIssueUnderIntermediate(t *testing.T) {
	root := testutil.NewRoot(t, pki.Options{CommonName: "Root", Days: 2})
	inter := root.Intermediate(t, pki.Options{CommonName: "Inter", Days: 1})
	ca, err := Import("inter", []*x509.Certificate{inter.Cert, root.Cert}, inter.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := (Policy{}).Apply(ca); err != nil {
		t.Fatal(err)
	}
	csr := mustParse(t, FieldClientCSR, b64(csrDER(t, ecKey(t, elliptic.P256()), cn("dev-1"), 0)), "dev-1")
	got, err := (&Issuer{}).Issue(ca, csr, "dev-1", "")
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifies(t, got.Chain)
	if len(got.Chain) != 3 || !leaf.NotAfter.Equal(inter.Cert.NotAfter) {
		t.Fatalf("chain of %d; valid until %s, want the CA's expiry %s (30 days asked)", len(got.Chain), leaf.NotAfter, inter.Cert.NotAfter)
	}
	var res dps.DeviceRegistrationResult
	got.Deliver(&res)
	certs, err := pki.ParseCertificates([]byte(res.IssuedClientCertificate))
	if err != nil || len(res.IssuedCertificateChain) != 0 {
		t.Fatalf("clientCertificateCsr answered with %+v (%v)", res, err)
	}
	if len(certs) != 2 || !certs[0].Equal(leaf) || !certs[1].Equal(inter.Cert) {
		t.Fatalf("issuedClientCertificate holds %d certificates, want the device's and the intermediate", len(certs))
	}

	var unusable *UnusableError
	if _, err := (&Issuer{Now: func() time.Time { return time.Now().Add(72 * time.Hour) }}).Issue(ca, csr, "dev-1", ""); !errors.As(err, &unusable) {
		t.Fatalf("issue from an expired CA: %v", err)
	}
}
