package serviceapi_test

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"flag"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/pki"
)

// The certificates of the tests are fixed files in testdata/certs, so that
// their thumbprints, serial numbers and dates are the same on every run and
// can be written into the golden files. They are valid for a hundred years.
// -regen-certs makes new ones (the golden files must then be rewritten with
// -update and reviewed).
var regenCerts = flag.Bool("regen-certs", false, "generate new certificate fixtures in testdata/certs")

const certDir = "testdata/certs"

// fixture is a certificate and, for the CAs and one device, its private key.
type fixture struct {
	Name string
	Cert *x509.Certificate
	Key  crypto.Signer
}

// PEM returns the certificate as PEM text.
func (f *fixture) PEM() string { return string(pki.EncodePEM(f.Cert)) }

// B64DER returns the certificate as base64 of its DER encoding.
func (f *fixture) B64DER() string { return base64.StdEncoding.EncodeToString(f.Cert.Raw) }

// B64PEM returns base64 of the PEM text, a form the Azure e2e tests send.
func (f *fixture) B64PEM() string { return base64.StdEncoding.EncodeToString([]byte(f.PEM())) }

// KeyPEM returns the private key as PEM.
func (f *fixture) KeyPEM(t testing.TB) string {
	t.Helper()
	b, err := pki.MarshalPrivateKeyPEM(f.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fixtureSpecs lists the fixtures in the order they must be made (issuers
// first).
var fixtureSpecs = []struct {
	name   string
	issuer string // "" for self-signed
	ca     bool
	cn     string
}{
	{"root", "", true, "dpsd-test-root"},
	{"intermediate", "root", true, "dpsd-test-intermediate"},
	{"device", "intermediate", false, "x509-device-1"},
	{"device2", "intermediate", false, "x509-device-2"},
	{"self", "", false, "x509-self-1"},
	{"other", "", true, "dpsd-test-other-root"},
}

var (
	fixturesOnce sync.Once
	fixturesMap  map[string]*fixture
	fixturesErr  error
)

// fixtures returns the certificate fixtures by name.
func fixtures(t testing.TB) map[string]*fixture {
	t.Helper()
	fixturesOnce.Do(func() {
		if *regenCerts {
			fixturesErr = generateFixtures()
			if fixturesErr != nil {
				return
			}
		}
		fixturesMap, fixturesErr = loadFixtures()
	})
	if fixturesErr != nil {
		t.Fatalf("certificate fixtures: %v (run go test -run TestFixtures -regen-certs ./internal/serviceapi/ to make them)", fixturesErr)
	}
	return fixturesMap
}

func loadFixtures() (map[string]*fixture, error) {
	m := map[string]*fixture{}
	for _, s := range fixtureSpecs {
		certs, err := pki.ReadCertificatesFile(filepath.Join(certDir, s.name+".pem"))
		if err != nil {
			return nil, err
		}
		key, err := pki.ReadPrivateKeyFile(filepath.Join(certDir, s.name+".key"), nil)
		if err != nil {
			return nil, err
		}
		m[s.name] = &fixture{Name: s.name, Cert: certs[0], Key: key}
	}
	return m, nil
}

func generateFixtures() error {
	if err := os.MkdirAll(certDir, 0o755); err != nil {
		return err
	}
	notBefore := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := time.Date(2125, 1, 1, 0, 0, 0, 0, time.UTC)
	made := map[string]*fixture{}
	for _, s := range fixtureSpecs {
		opts := pki.Options{
			CommonName: s.cn,
			Subject:    pkix.Name{Organization: []string{"dpsd tests"}},
			NotBefore:  notBefore,
			NotAfter:   notAfter,
		}
		var (
			c   *x509.Certificate
			k   crypto.Signer
			err error
		)
		switch {
		case s.issuer == "" && s.ca:
			c, k, err = pki.NewRootCA(opts)
		case s.issuer == "":
			c, k, err = pki.NewSelfSigned(opts)
		case s.ca:
			c, k, err = pki.NewIntermediateCA(opts, made[s.issuer].Cert, made[s.issuer].Key)
		default:
			c, k, err = pki.NewLeaf(opts, made[s.issuer].Cert, made[s.issuer].Key)
		}
		if err != nil {
			return err
		}
		made[s.name] = &fixture{Name: s.name, Cert: c, Key: k}
		if err := pki.WriteCertificatesFile(filepath.Join(certDir, s.name+".pem"), []*x509.Certificate{c}, true); err != nil {
			return err
		}
		if err := pki.WritePrivateKeyFile(filepath.Join(certDir, s.name+".key"), k, nil, true); err != nil {
			return err
		}
	}
	return nil
}

// TestFixtures checks that the fixtures are what the golden files assume:
// the chain root → intermediate → device, CA flags, and a validity that has
// not run out.
func TestFixtures(t *testing.T) {
	f := fixtures(t)
	if err := f["intermediate"].Cert.CheckSignatureFrom(f["root"].Cert); err != nil {
		t.Errorf("intermediate is not signed by root: %v", err)
	}
	for _, d := range []string{"device", "device2"} {
		if err := f[d].Cert.CheckSignatureFrom(f["intermediate"].Cert); err != nil {
			t.Errorf("%s is not signed by intermediate: %v", d, err)
		}
	}
	for _, s := range fixtureSpecs {
		c := f[s.name].Cert
		if c.IsCA != s.ca {
			t.Errorf("%s: IsCA = %v, want %v", s.name, c.IsCA, s.ca)
		}
		if c.Subject.CommonName != s.cn {
			t.Errorf("%s: CN = %q, want %q", s.name, c.Subject.CommonName, s.cn)
		}
		if time.Until(c.NotAfter) < 365*24*time.Hour {
			t.Errorf("%s expires at %s: regenerate the fixtures (-regen-certs) and the golden files (-update)", s.name, c.NotAfter)
		}
	}
}
