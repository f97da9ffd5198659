package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"

	"github.com/dpsd/dpsd/internal/pki"
)

// LoadX509KeyPair reads a device certificate file (the leaf, optionally
// followed by its chain) and its private key, which may be encrypted with a
// passphrase (PKCS#8 as written by OpenSSL, or legacy PEM encryption).
func LoadX509KeyPair(certFile, keyFile string, passphrase []byte) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return X509KeyPair(certPEM, keyPEM, passphrase)
}

// X509KeyPair is LoadX509KeyPair for PEM data in memory.
func X509KeyPair(certPEM, keyPEM, passphrase []byte) (tls.Certificate, error) {
	certs, err := pki.ParseCertificates(certPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("device certificate: %w", err)
	}
	key, err := pki.ParsePrivateKeyPEM(keyPEM, passphrase)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("device key: %w", err)
	}
	c := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	if !pki.KeyMatches(key, certs[0].PublicKey) {
		return tls.Certificate{}, errors.New("the private key does not belong to the device certificate (the first certificate of the file)")
	}
	return c, nil
}
