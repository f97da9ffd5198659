package pki

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
)

func TestParseCertificate(t *testing.T) {
	ch := newTestChain(t, "device-01")
	leafPEM := string(EncodePEM(ch.leaf))
	keyPEM, err := MarshalPrivateKeyPEM(ch.leafKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	wrapped := func(s string) string { // base64 broken into 64-column lines
		var b strings.Builder
		for len(s) > 64 {
			b.WriteString(s[:64] + "\n")
			s = s[64:]
		}
		return b.String() + s
	}

	ok := map[string]string{
		"ok/pem":                        leafPEM,
		"ok/pem-crlf":                   strings.ReplaceAll(leafPEM, "\n", "\r\n"),
		"ok/pem-surrounding-space":      "\n\t  " + leafPEM + "  \n",
		"ok/pem-with-text-before":       "Bag Attributes\nsubject=CN = device-01\n" + leafPEM,
		"ok/pem-key-then-cert":          string(keyPEM) + leafPEM,
		"ok/pem-chain-first-wins":       string(EncodePEM(ch.leaf, ch.inter, ch.root)),
		"ok/pem-escaped-newlines":       strings.ReplaceAll(strings.TrimSpace(leafPEM), "\n", `\n`),
		"ok/pem-x509-certificate-alias": string(pem.EncodeToMemory(&pem.Block{Type: "X509 CERTIFICATE", Bytes: ch.leaf.Raw})),
		"ok/base64-der":                 b64(ch.leaf.Raw),
		"ok/base64-der-no-padding":      base64.RawStdEncoding.EncodeToString(ch.leaf.Raw),
		"ok/base64-der-wrapped":         wrapped(b64(ch.leaf.Raw)),
		"ok/base64-der-spaces":          "  " + b64(ch.leaf.Raw) + "\n",
		"ok/base64-pem":                 b64([]byte(leafPEM)),
		"ok/raw-der":                    string(ch.leaf.Raw),
	}
	for name, in := range ok {
		t.Run(name, func(t *testing.T) {
			c, err := ParseCertificate(in)
			if err != nil {
				t.Fatalf("ParseCertificate: %v", err)
			}
			if !c.Equal(ch.leaf) {
				t.Fatalf("got %s, want the device certificate", c.Subject)
			}
		})
	}

	corrupt := []byte(leafPEM)
	corrupt[len(corrupt)/2] = '!'
	truncatedDER := ch.leaf.Raw[:len(ch.leaf.Raw)-10]
	fail := map[string]struct{ in, want string }{
		"fail/empty":                {"", "certificate is empty"},
		"fail/blank":                {" \n\t", "certificate is empty"},
		"fail/private-key-pem":      {string(keyPEM), "not a certificate: PEM block is PRIVATE KEY"},
		"fail/two-other-blocks":     {string(keyPEM) + string(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 1, 0}})), "not a certificate: PEM blocks are PRIVATE KEY, EC PARAMETERS"},
		"fail/garbage-text":         {"hello, world", "not PEM or base64 DER"},
		"fail/base64-of-text":       {b64([]byte("hello, world")), "not PEM or base64 DER"},
		"fail/words":                {"not a certificate", "not PEM or base64 DER"},
		"fail/base64-of-key-pem":    {b64(keyPEM), "not a certificate: PEM block is PRIVATE KEY"},
		"fail/truncated-der":        {string(truncatedDER), "invalid certificate"},
		"fail/truncated-base64-der": {b64(truncatedDER), "invalid certificate"},
		"fail/corrupt-pem-body":     {string(corrupt), "not a certificate: malformed PEM"},
		"fail/begin-only":           {"-----BEGIN CERTIFICATE-----\nMIIB\n", "not a certificate: malformed PEM"},
		"fail/pem-of-garbage":       {string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})), "invalid certificate"},
		"fail/der-sequence-garbage": {"\x30\x03\x02\x01\x01", "invalid certificate"},
	}
	for name, tc := range fail {
		t.Run(name, func(t *testing.T) {
			c, err := ParseCertificate(tc.in)
			if err == nil {
				t.Fatalf("ParseCertificate succeeded (%s); want error %q", c.Subject, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestParseCertificateTrailingSpaceByte: a DER certificate may end in a byte
// that is white space in ASCII; trimming it would break the certificate.
func TestParseCertificateTrailingSpaceByte(t *testing.T) {
	var der []byte
	for range 10000 {
		c, _, err := NewSelfSigned(Options{CommonName: "signer"})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte([]byte(" \t\n\v\f\r"), c.Raw[len(c.Raw)-1]) >= 0 {
			der = c.Raw
			break
		}
	}
	if der == nil {
		t.Fatal("no certificate ending in a white-space byte in 10000 tries")
	}
	for name, in := range map[string]string{
		"raw DER":    string(der),
		"base64 DER": base64.StdEncoding.EncodeToString(der),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := ParseCertificate(in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.Raw, der) {
				t.Fatal("parsed another certificate")
			}
		})
	}
}

func TestParseCertificates(t *testing.T) {
	ch := newTestChain(t, "device-01")
	keyPEM, err := MarshalPrivateKeyPEM(ch.leafKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	chainPEM := EncodePEM(ch.leaf, ch.inter, ch.root)
	concatDER := append(append(append([]byte{}, ch.leaf.Raw...), ch.inter.Raw...), ch.root.Raw...)

	ok := map[string][]byte{
		"ok/pem-chain":         chainPEM,
		"ok/pem-key-and-chain": append(append([]byte{}, keyPEM...), chainPEM...),
		"ok/base64-pem-chain":  []byte(base64.StdEncoding.EncodeToString(chainPEM)),
		"ok/der-concatenated":  concatDER,
		"ok/base64-der-concat": []byte(base64.StdEncoding.EncodeToString(concatDER)),
	}
	for name, in := range ok {
		t.Run(name, func(t *testing.T) {
			certs, err := ParseCertificates(in)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != 3 || !certs[0].Equal(ch.leaf) || !certs[1].Equal(ch.inter) || !certs[2].Equal(ch.root) {
				t.Fatalf("got %d certificates, want leaf, intermediate, root in order", len(certs))
			}
		})
	}

	badSecond := append(EncodePEM(ch.leaf), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}})...)
	fail := map[string]struct {
		in   []byte
		want string
	}{
		"fail/empty":         {nil, "certificate is empty"},
		"fail/key-only":      {keyPEM, "not a certificate: PEM block is PRIVATE KEY"},
		"fail/invalid-block": {badSecond, "certificate 2: invalid certificate"},
		"fail/text":          {[]byte("not a cert"), "not PEM or base64 DER"},
	}
	for name, tc := range fail {
		t.Run(name, func(t *testing.T) {
			_, err := ParseCertificates(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestEncodePEM(t *testing.T) {
	ch := newTestChain(t, "device-01")
	out := EncodePEM(ch.leaf, nil, ch.root)
	if n := bytes.Count(out, []byte("-----BEGIN CERTIFICATE-----")); n != 2 {
		t.Fatalf("%d blocks; want 2", n)
	}
	certs, err := ParseCertificates(out)
	if err != nil || len(certs) != 2 || !certs[0].Equal(ch.leaf) || !certs[1].Equal(ch.root) {
		t.Fatalf("round trip: %v", err)
	}
	if len(EncodePEM()) != 0 {
		t.Fatal("EncodePEM() is not empty")
	}
}
