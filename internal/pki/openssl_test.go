package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestOpenSSLWalkthroughSelfSigned runs the walkthrough's own command (rsa:4096, or
// rsa:2048 with -short) and reads its certificate and pass-phrase protected
// key.
func TestOpenSSLWalkthroughSelfSigned(t *testing.T) {
	dir := t.TempDir()
	bits := "rsa:4096"
	if testing.Short() {
		bits = "rsa:2048"
	}
	openssl(t, dir, "req", "-outform", "PEM", "-x509", "-sha256", "-newkey", bits,
		"-keyout", "device-key.pem", "-out", "device-cert.pem", "-days", "30",
		"-extensions", "usr_cert", "-addext", "extendedKeyUsage=clientAuth",
		"-subj", "/CN=my-x509-device", "-passout", "pass:1234")

	certs, err := ReadCertificatesFile(filepath.Join(dir, "device-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c := certs[0]
	if c.Subject.CommonName != "my-x509-device" || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("subject %s, EKU %v", c.Subject, c.ExtKeyUsage)
	}
	if info := Info(c); info.SubjectName != "CN=my-x509-device" || info.IssuerName != "CN=my-x509-device" {
		t.Fatalf("info names %q %q", info.SubjectName, info.IssuerName)
	}
	keyPEM := readTestFile(t, filepath.Join(dir, "device-key.pem"))
	if !strings.Contains(string(keyPEM), "ENCRYPTED PRIVATE KEY") {
		t.Fatalf("openssl wrote an unencrypted key:\n%s", keyPEM)
	}
	key, err := ParsePrivateKeyPEM(keyPEM, []byte("1234"))
	if err != nil {
		t.Fatalf("reading the walkthrough's key with pass phrase 1234: %v", err)
	}
	if !KeyMatches(key, c.PublicKey) {
		t.Fatal("the key does not match the certificate")
	}
	if _, err := ParsePrivateKeyPEM(keyPEM, []byte("123")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong pass phrase: %v", err)
	}
	if _, err := ParsePrivateKeyPEM(keyPEM, nil); !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("no pass phrase: %v", err)
	}
}

// TestOpenSSLReadsOurKeys has openssl decrypt keys written here.
func TestOpenSSLReadsOurKeys(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []KeyType{KeyECDSAP256, KeyRSA2048} {
		t.Run(string(kind), func(t *testing.T) {
			key, err := GenerateKey(kind)
			if err != nil {
				t.Fatal(err)
			}
			p, err := MarshalPrivateKeyPEM(key, []byte("1234"))
			if err != nil {
				t.Fatal(err)
			}
			f := writeTestFile(t, dir, string(kind)+".key.pem", p)
			openssl(t, dir, "pkey", "-in", f, "-passin", "pass:1234", "-noout")
			if out, err := opensslErr(dir, "pkey", "-in", f, "-passin", "pass:4321", "-noout"); err == nil {
				t.Fatalf("openssl accepted a wrong pass phrase:\n%s", out)
			}
			params := openssl(t, dir, "asn1parse", "-in", f)
			for _, want := range []string{":PBES2", ":PBKDF2", ":hmacWithSHA256", ":aes-256-cbc"} {
				if !strings.Contains(params, want) {
					t.Errorf("asn1parse lacks %s:\n%s", want, params)
				}
			}
			// openssl's view of the public key is ours.
			pub := openssl(t, dir, "pkey", "-in", f, "-passin", "pass:1234", "-pubout")
			if got, err := x509.ParsePKIXPublicKey(pemBytes(t, pub)); err != nil || !KeyMatches(key, got) {
				t.Fatalf("openssl's public key differs from ours (%v)", err)
			}
			plain, err := MarshalPrivateKeyPEM(key, nil)
			if err != nil {
				t.Fatal(err)
			}
			openssl(t, dir, "pkey", "-in", writeTestFile(t, dir, string(kind)+".plain.pem", plain), "-noout")
		})
	}
}

func pemBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("no public key in %q", s)
	}
	return b.Bytes
}

// TestOpenSSLVerifiesOurChain checks the chains made here the way the walkthrough's
// users will: openssl verify, and openssl x509 -purpose.
func TestOpenSSLVerifiesOurChain(t *testing.T) {
	dir := t.TempDir()
	ch := newTestChain(t, "device-01")
	self, _, err := NewSelfSigned(Options{CommonName: "my-x509-device"})
	if err != nil {
		t.Fatal(err)
	}
	verification, err := NewVerificationCert("0123ABCD", ch.root, ch.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, dir, "root.pem", EncodePEM(ch.root))
	writeTestFile(t, dir, "intermediate.pem", EncodePEM(ch.inter))
	writeTestFile(t, dir, "device.pem", EncodePEM(ch.leaf))
	writeTestFile(t, dir, "full-chain.pem", EncodePEM(ch.leaf, ch.inter, ch.root))
	writeTestFile(t, dir, "self.pem", EncodePEM(self))
	writeTestFile(t, dir, "verification.pem", EncodePEM(verification))

	if out := openssl(t, dir, "verify", "-CAfile", "root.pem", "-untrusted", "intermediate.pem", "device.pem"); !strings.Contains(out, "device.pem: OK") {
		t.Fatalf("openssl verify: %s", out)
	}
	openssl(t, dir, "verify", "-purpose", "sslclient", "-CAfile", "root.pem", "-untrusted", "full-chain.pem", "device.pem")
	if out, err := opensslErr(dir, "verify", "-purpose", "sslserver", "-CAfile", "root.pem", "-untrusted", "intermediate.pem", "device.pem"); err == nil {
		t.Fatalf("openssl verify accepted a device certificate as a server:\n%s", out)
	}
	if out, err := opensslErr(dir, "verify", "-CAfile", "intermediate.pem", "device.pem"); err == nil {
		t.Fatalf("openssl verify accepted a chain without its root:\n%s", out)
	}
	openssl(t, dir, "verify", "-CAfile", "root.pem", "verification.pem")
	openssl(t, dir, "verify", "-CAfile", "self.pem", "-purpose", "sslclient", "self.pem")

	for _, f := range []string{"device.pem", "self.pem"} {
		out := openssl(t, dir, "x509", "-in", f, "-noout", "-purpose")
		if !strings.Contains(out, "SSL client : Yes") || !strings.Contains(out, "SSL server : No") || !strings.Contains(out, "SSL client CA : No") {
			t.Errorf("%s purposes:\n%s", f, out)
		}
		ext := openssl(t, dir, "x509", "-in", f, "-noout", "-ext", "extendedKeyUsage,basicConstraints")
		if !strings.Contains(ext, "TLS Web Client Authentication") || !strings.Contains(ext, "CA:FALSE") {
			t.Errorf("%s extensions:\n%s", f, ext)
		}
	}
	for _, f := range []string{"root.pem", "intermediate.pem"} {
		out := openssl(t, dir, "x509", "-in", f, "-noout", "-purpose")
		if !strings.Contains(out, "SSL client CA : Yes") {
			t.Errorf("%s purposes:\n%s", f, out)
		}
	}
}

// TestOpenSSLProofOfPossession follows Azure's tutorial: openssl makes the
// verification certificate for a CA made here, and the reverse.
func TestOpenSSLProofOfPossession(t *testing.T) {
	dir := t.TempDir()
	const code = "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718"
	root, rootKey, err := NewRootCA(Options{CommonName: "Azure IoT Hub CA Cert Test Only", KeyType: KeyRSA2048})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := MarshalPrivateKeyPEM(rootKey, []byte("1234"))
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, dir, "root.pem", EncodePEM(root))
	writeTestFile(t, dir, "root.key.pem", keyPEM)
	openssl(t, dir, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "verification.key.pem", "-out", "verification.csr", "-subj", "/CN="+code)
	openssl(t, dir, "x509", "-req", "-in", "verification.csr", "-CA", "root.pem", "-CAkey", "root.key.pem",
		"-passin", "pass:1234", "-CAcreateserial", "-out", "verification.pem", "-days", "30", "-sha256")
	certs, err := ReadCertificatesFile(filepath.Join(dir, "verification.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProofOfPossession(root, certs[0], code); err != nil {
		t.Fatalf("openssl-made verification certificate: %v", err)
	}

	// An openssl root CA, a verification certificate made here.
	openssl(t, dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ossl.key.pem", "-out", "ossl.pem",
		"-days", "30", "-subj", "/CN=openssl root", "-addext", "basicConstraints=critical,CA:TRUE")
	ca, err := ReadCertificatesFile(filepath.Join(dir, "ossl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ReadPrivateKeyFile(filepath.Join(dir, "ossl.key.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerificationCert(code, ca[0], caKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProofOfPossession(ca[0], v, code); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, dir, "v.pem", EncodePEM(v))
	openssl(t, dir, "verify", "-CAfile", "ossl.pem", "v.pem")
}
