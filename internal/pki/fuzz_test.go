package pki

import (
	"encoding/base64"
	"encoding/pem"
	"testing"
)

// FuzzParseCertificate feeds untrusted certificate text (what enrollments and
// CA uploads carry) to the parsers; they must return, not panic.
func FuzzParseCertificate(f *testing.F) {
	ch := newTestChain(f, "device-01")
	certPEM := EncodePEM(ch.leaf, ch.inter)
	f.Add(string(certPEM))
	f.Add(string(ch.leaf.Raw))
	f.Add(base64.StdEncoding.EncodeToString(ch.leaf.Raw))
	f.Add(base64.StdEncoding.EncodeToString(certPEM))
	f.Add("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n")
	f.Add("")
	f.Add("\x30\x03\x02\x01\x01")
	f.Fuzz(func(t *testing.T, s string) {
		if c, err := ParseCertificate(s); err == nil {
			info := Info(c)
			_ = DistinguishedName(c.RawSubject)
			if info.SHA1Thumbprint == "" {
				t.Fatal("parsed certificate without thumbprint")
			}
		}
		if certs, err := ParseCertificates([]byte(s)); err == nil && len(certs) == 0 {
			t.Fatal("ParseCertificates: no error and no certificates")
		}
		_ = DistinguishedName([]byte(s))
	})
}

// FuzzParsePrivateKeyPEM feeds untrusted key files to the key parser, with
// and without a passphrase; it must return, not panic.
func FuzzParsePrivateKeyPEM(f *testing.F) {
	_, plain := newKeyPEM(f, KeyECDSAP256)
	f.Add(plain)
	block, _ := pem.Decode(plain)
	// Few iterations keep the fuzzer fast.
	enc, err := encryptPKCS8(block.Bytes, []byte("1234"), 16)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: pemEncryptedPKCS8, Bytes: enc}))
	f.Add(enc)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: pemPKCS1, Headers: map[string]string{
		"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00112233445566778899AABBCCDDEEFF"}, Bytes: make([]byte, 32)}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: pemSEC1, Bytes: []byte{0x30, 0}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pass := range [][]byte{nil, []byte("1234")} {
			k, err := ParsePrivateKeyPEM(data, pass)
			if err == nil && k == nil {
				t.Fatal("no error and no key")
			}
		}
	})
}
