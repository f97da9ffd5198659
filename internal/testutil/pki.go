package testutil

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"github.com/dpsd/dpsd/internal/pki"
)

// CA is a CA certificate and its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRoot makes a self-signed root CA.
func NewRoot(t testing.TB, o pki.Options) CA {
	t.Helper()
	c, k, err := pki.NewRootCA(o)
	if err != nil {
		t.Fatalf("NewRootCA(%s): %v", o.CommonName, err)
	}
	return CA{c, k}
}

// Intermediate issues an intermediate CA certificate. Options make the odd
// ones: IsCA false, a serverAuth-only ExtKeyUsage, MaxPathLen 0, a validity
// period in the past, SignatureAlgorithm SHA1WithRSA.
func (c CA) Intermediate(t testing.TB, o pki.Options) CA {
	t.Helper()
	ic, k, err := pki.NewIntermediateCA(o, c.Cert, c.Key)
	if err != nil {
		t.Fatalf("NewIntermediateCA(%s): %v", o.CommonName, err)
	}
	return CA{ic, k}
}

// Leaf issues a device certificate.
func (c CA) Leaf(t testing.TB, o pki.Options) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	l, k, err := pki.NewLeaf(o, c.Cert, c.Key)
	if err != nil {
		t.Fatalf("NewLeaf(%s): %v", o.CommonName, err)
	}
	return l, k
}

// SelfSigned makes a self-signed device certificate.
func SelfSigned(t testing.TB, o pki.Options) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	c, k, err := pki.NewSelfSigned(o)
	if err != nil {
		t.Fatalf("NewSelfSigned(%s): %v", o.CommonName, err)
	}
	return c, k
}

// TLSCert is what a device presents: its key, and the chain leaf first.
func TLSCert(key crypto.Signer, chain ...*x509.Certificate) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// WriteCredentials writes a device's certificate chain (leaf first) and its
// unencrypted key as PEM files dir/name.cert.pem and dir/name.key.pem.
func WriteCredentials(t testing.TB, dir, name string, key crypto.Signer, chain ...*x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".cert.pem"), filepath.Join(dir, name+".key.pem")
	if err := pki.WriteCertificatesFile(certFile, chain, true); err != nil {
		t.Fatal(err)
	}
	if err := pki.WritePrivateKeyFile(keyFile, key, nil, true); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
