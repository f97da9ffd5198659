package sqlstore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

func testDER(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signer"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCertificate(t *testing.T) {
	// A DER certificate may end in a byte that is white space in ASCII;
	// trimming it would break the certificate.
	var der []byte
	for range 10000 {
		der = testDER(t)
		if bytes.IndexByte([]byte(" \t\n\v\f\r"), der[len(der)-1]) >= 0 {
			break
		}
	}
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	b64 := base64.StdEncoding.EncodeToString(der)
	for name, in := range map[string]string{
		"ok/pem":                pemText,
		"ok/pem with spaces":    "\n  " + pemText + "\n",
		"ok/base64 der":         b64,
		"ok/base64 der wrapped": b64[:40] + "\n" + b64[40:80] + "\r\n" + b64[80:],
		"ok/base64 pem":         base64.StdEncoding.EncodeToString([]byte(pemText)),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := parseCertificate(in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.Raw, der) {
				t.Fatal("parsed another certificate")
			}
		})
	}
	for name, in := range map[string]string{
		"fail/empty":          "",
		"fail/not base64":     "not a certificate!",
		"fail/key pem":        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"fail/truncated der":  base64.StdEncoding.EncodeToString(der[:len(der)-1]),
		"fail/broken pem":     "-----BEGIN CERTIFICATE-----\nAAAA",
		"fail/base64 garbage": base64.StdEncoding.EncodeToString([]byte("garbage")),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseCertificate(in); err == nil {
				t.Fatal("parsed")
			}
		})
	}
}

// FuzzParseCertificate checks that no certificate text, which comes from
// clients, makes the store panic.
func FuzzParseCertificate(f *testing.F) {
	der := testDER(f)
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	f.Add(base64.StdEncoding.EncodeToString(der))
	f.Add("-----BEGIN CERTIFICATE-----\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCertificate(s)
		if err == nil && len(c.Raw) == 0 {
			t.Fatal("a certificate without bytes")
		}
	})
}
