package issuance

import (
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

func TestGenerate(t *testing.T) {
	c, err := Generate("line-3", GenerateOptions{KeyType: pki.KeyRSA2048, Days: 400})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(c.CertificateDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParsePrivateKeyPEM(c.PrivateKeyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "line-3" || c.Origin != store.OriginGenerated || len(c.ChainDER) != 0 || !pki.KeyMatches(key, cert.PublicKey) {
		t.Fatalf("generated %+v", c)
	}
	if cert.Subject.CommonName != "line-3" || !cert.IsCA || cert.MaxPathLen != 0 || !cert.MaxPathLenZero ||
		cert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || pki.DescribeKey(cert.PublicKey) != "RSA 2048" {
		t.Fatalf("generated CA: %s CA %v pathlen %d usage %v key %s", cert.Subject, cert.IsCA, cert.MaxPathLen, cert.KeyUsage, pki.DescribeKey(cert.PublicKey))
	}
	if d := cert.NotAfter.Sub(cert.NotBefore); d < 399*24*time.Hour || d > 401*24*time.Hour {
		t.Fatalf("validity %s, want 400 days", d)
	}
	if err := Check(c, time.Now()); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]GenerateOptions{"negative days": {Days: -1}, "bad key type": {KeyType: "dsa"}} {
		if _, err := Generate("x", o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestImport(t *testing.T) {
	now := time.Now()
	root := testutil.NewRoot(t, pki.Options{CommonName: "Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "Inter"})
	other := testutil.NewRoot(t, pki.Options{CommonName: "Other"})
	weak := root.Intermediate(t, pki.Options{CommonName: "Weak", Key: ecKey(t, elliptic.P224())})
	noCRLSign := root.Intermediate(t, pki.Options{CommonName: "No CRL Sign", KeyUsage: x509.KeyUsageCertSign})
	expired := root.Intermediate(t, pki.Options{CommonName: "Expired", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	leaf, leafKey := inter.Leaf(t, pki.Options{CommonName: "dev-1"})

	for name, c := range map[string]struct {
		certs []*x509.Certificate
		ca    testutil.CA
		want  string
	}{
		"ok/root":                        {[]*x509.Certificate{root.Cert}, root, ""},
		"ok/intermediate-with-its-chain": {[]*x509.Certificate{inter.Cert, root.Cert}, inter, ""},
		"ok/intermediate-alone":          {[]*x509.Certificate{inter.Cert}, inter, ""},
		"fail/not-a-ca":                  {[]*x509.Certificate{leaf}, testutil.CA{Cert: leaf, Key: leafKey}, "is not a CA certificate"},
		"fail/wrong-key":                 {[]*x509.Certificate{inter.Cert}, testutil.CA{Cert: inter.Cert, Key: other.Key}, "the private key does not belong to the CA certificate"},
		"fail/broken-chain":              {[]*x509.Certificate{inter.Cert, other.Cert}, inter, "the chain is broken: CN=Inter is not issued by the certificate after it, CN=Other"},
		"fail/weak-key":                  {[]*x509.Certificate{weak.Cert}, weak, "has a key on P-224"},
		"fail/no-crl-sign":               {[]*x509.Certificate{noCRLSign.Cert}, noCRLSign, "lacks cRLSign"},
		"fail/expired":                   {[]*x509.Certificate{expired.Cert}, expired, "expired at"},
		"fail/nothing":                   {nil, root, "no CA certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Import("imp", c.certs, c.ca.Key, now)
			if testutil.WantError(t, err, c.want) {
				return
			}
			if got.Origin != store.OriginImported || !slices.Equal(got.CertificateDER, c.certs[0].Raw) || len(got.ChainDER) != len(c.certs)-1 {
				t.Fatalf("imported %+v", got)
			}
			if err := Check(got, now); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestCheckExpiredCA(t *testing.T) {
	c, err := Generate("ca", GenerateOptions{Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	var unusable *UnusableError
	if err := Check(c, time.Now().Add(48*time.Hour)); !errors.As(err, &unusable) {
		t.Fatalf("an expired CA: %v, want an UnusableError", err)
	}
	c.PrivateKeyPEM = []byte("garbage")
	if err := Check(c, time.Now()); err == nil || errors.As(err, &unusable) {
		t.Fatalf("a corrupt CA: %v, want an error other than UnusableError", err)
	}
}

func TestPolicy(t *testing.T) {
	c := &store.IssuingCA{}
	if err := (Policy{}).Apply(c); err != nil || c.CertificateValidityDays != DefaultCertificateValidityDays || !slices.Equal(c.ExtendedKeyUsages, []string{EKUClientAuth}) {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	if err := (Policy{CertificateValidityDays: 7, ExtendedKeyUsages: []string{"ServerAuth", "clientauth", "serverAuth"}}).Apply(c); err != nil ||
		c.CertificateValidityDays != 7 || !slices.Equal(c.ExtendedKeyUsages, []string{EKUClientAuth, EKUServerAuth}) {
		t.Fatalf("set: %v %+v", err, c)
	}
	if err := (Policy{}).Apply(c); err != nil || c.CertificateValidityDays != 7 || len(c.ExtendedKeyUsages) != 2 {
		t.Fatalf("an empty policy changed %+v (%v)", c, err)
	}
	for _, p := range []Policy{{CertificateValidityDays: -1}, {CertificateValidityDays: MaxValidityDays + 1}, {ExtendedKeyUsages: []string{"codeSigning"}}} {
		if err := p.Apply(&store.IssuingCA{}); err == nil {
			t.Errorf("%+v: accepted", p)
		}
	}
}
