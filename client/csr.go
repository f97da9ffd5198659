package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/dpsd/dpsd/internal/pki"
)

// NewCSR makes a new ECDSA P-256 key and a certificate signing request for
// registrationID signed with it, for Config.CSR. Keep the key: the
// certificate the service issues is for it.
func NewCSR(registrationID string) (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := CSRFor(registrationID, key)
	return key, csr, err
}

// CSRFor is NewCSR for a key the device already has (an RSA key, or one in
// a secure element): a request whose subject is CN=registrationID, signed
// by key.
func CSRFor(registrationID string, key crypto.Signer) ([]byte, error) {
	if registrationID == "" {
		return nil, errors.New("the registration ID is empty")
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: registrationID}}, key)
}

// IssuedCertificates decodes IssuedCertificateChain: the device's
// certificate first, then the CAs up to the root.
func (s *RegistrationState) IssuedCertificates() ([]*x509.Certificate, error) {
	if len(s.IssuedCertificateChain) == 0 {
		return nil, errors.New("the registration state carries no issued certificate")
	}
	certs := make([]*x509.Certificate, len(s.IssuedCertificateChain))
	for i, b := range s.IssuedCertificateChain {
		der, err := base64.StdEncoding.DecodeString(b)
		if err != nil {
			return nil, fmt.Errorf("issuedCertificateChain[%d] is not base64", i)
		}
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("issuedCertificateChain[%d]: %w", i, err)
		}
	}
	return certs, nil
}

// IssuedKeyPair is the issued certificate with its key, ready for
// Config.Certificate (to register again with it) or for connecting to the
// IoT hub: the device's certificate and the CAs above it, without a
// self-signed root, which the other side has.
func (s *RegistrationState) IssuedKeyPair(key crypto.Signer) (tls.Certificate, error) {
	certs, err := s.IssuedCertificates()
	if err != nil {
		return tls.Certificate{}, err
	}
	if !pki.KeyMatches(key, certs[0].PublicKey) {
		return tls.Certificate{}, errors.New("the issued certificate is not for this key")
	}
	c := tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for i, x := range certs {
		if i > 0 && x.CheckSignatureFrom(x) == nil {
			break // the root
		}
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}
