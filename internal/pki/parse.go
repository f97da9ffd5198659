// Package pki is the X.509 toolkit of dpsd: it reads certificates in every
// form DPS clients send them (PEM, base64 DER, base64 of PEM text, DER),
// describes them the way DPS does (X509CertificateInfo), reads and writes
// private keys in the formats OpenSSL uses (including pass-phrase protected
// PKCS#8 and legacy "Proc-Type: 4,ENCRYPTED" PEM), issues CA, device, server
// and verification certificates, and checks CA proof of possession.
//
// It uses the standard library only. Every parser here takes untrusted bytes
// and returns an error, never panics, on malformed input.
package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// PEM block types.
const (
	pemCertificate     = "CERTIFICATE"
	pemX509Certificate = "X509 CERTIFICATE" // an old alias some tools still write
)

var pemBegin = []byte("-----BEGIN ")

// ParseCertificate reads one certificate given as PEM text (the first
// CERTIFICATE block is used; other blocks are skipped), base64 of DER, base64
// of PEM text, or raw DER bytes held in a string — every form the DPS service
// API and its SDKs accept. PEM whose line breaks were escaped as the two
// characters `\n` (a certificate pasted from JSON) is accepted too.
func ParseCertificate(s string) (*x509.Certificate, error) {
	pemData, der, err := decodeInput([]byte(s))
	if err != nil {
		return nil, err
	}
	if pemData == nil {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
		return c, nil
	}
	var types []string
	for rest := pemData; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if !isCertBlock(b.Type) {
			types = append(types, b.Type)
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
		return c, nil
	}
	return nil, noCertError(types)
}

// ParseCertificates reads every certificate of a PEM bundle, in file order,
// skipping blocks of other types (a private key kept in the same file). Input
// that is not PEM is read as ParseCertificate reads it; base64 or raw DER may
// hold several concatenated certificates. It fails if no certificate is found
// or any CERTIFICATE block is invalid.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	pemData, der, err := decodeInput(data)
	if err != nil {
		return nil, err
	}
	if pemData == nil {
		certs, err := x509.ParseCertificates(der)
		if err != nil {
			return nil, fmt.Errorf("invalid certificate: %w", err)
		}
		if len(certs) == 0 {
			return nil, errors.New("no certificate found")
		}
		return certs, nil
	}
	var (
		certs []*x509.Certificate
		types []string
	)
	for rest := pemData; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if !isCertBlock(b.Type) {
			types = append(types, b.Type)
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: invalid certificate: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, noCertError(types)
	}
	return certs, nil
}

// EncodePEM returns the certificates as concatenated CERTIFICATE blocks.
func EncodePEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		if c == nil {
			continue
		}
		// pem.Encode fails only on invalid header keys; there are none.
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

func isCertBlock(t string) bool { return t == pemCertificate || t == pemX509Certificate }

func noCertError(types []string) error {
	switch len(types) {
	case 0:
		return errors.New("not a certificate: malformed PEM")
	case 1:
		return fmt.Errorf("not a certificate: PEM block is %s", types[0])
	}
	return fmt.Errorf("not a certificate: PEM blocks are %s", strings.Join(types, ", "))
}

// decodeInput recognises the input form. It returns either PEM text (pemData
// non-nil) or DER bytes.
func decodeInput(data []byte) (pemData, der []byte, err error) {
	// A DER certificate starts with the SEQUENCE tag 0x30 ('0'), while base64
	// of DER starts with 'M' and base64 of PEM with "LS0t", so the forms
	// cannot be confused. DER is taken untrimmed: its last bytes may look like
	// white space.
	if len(data) > 0 && data[0] == 0x30 && !bytes.Contains(data, pemBegin) {
		return nil, data, nil
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil, errors.New("certificate is empty")
	}
	if bytes.Contains(trimmed, pemBegin) {
		return unescapePEM(trimmed), nil, nil
	}
	decoded, ok := decodeBase64(trimmed)
	if !ok || len(decoded) == 0 {
		return nil, nil, errors.New("not PEM or base64 DER")
	}
	if bytes.Contains(decoded, pemBegin) {
		return unescapePEM(bytes.TrimSpace(decoded)), nil, nil
	}
	if decoded[0] != 0x30 {
		// Plain words can be valid base64; what they decode to is no DER.
		return nil, nil, errors.New("not PEM or base64 DER")
	}
	return nil, decoded, nil
}

// decodeBase64 decodes standard base64 with or without padding, ignoring
// white space (line breaks in pasted text).
func decodeBase64(b []byte) ([]byte, bool) {
	compact := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, b)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding} {
		if out, err := enc.DecodeString(string(compact)); err == nil {
			return out, true
		}
	}
	return nil, false
}

// unescapePEM turns the two-character sequence `\n` into a line break when
// PEM text has no real line breaks, as happens when it is copied out of a
// JSON string.
func unescapePEM(b []byte) []byte {
	if bytes.IndexByte(b, '\n') >= 0 || !bytes.Contains(b, []byte(`\n`)) {
		return b
	}
	b = bytes.ReplaceAll(b, []byte(`\r\n`), []byte("\n"))
	return bytes.ReplaceAll(b, []byte(`\n`), []byte("\n"))
}
