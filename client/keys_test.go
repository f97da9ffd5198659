package client_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestLoadX509KeyPair reads a device certificate file with its chain and a
// passphrase-protected key, as `dpsd cert` and openssl write them.
func TestLoadX509KeyPair(t *testing.T) {
	dir := t.TempDir()
	root := testutil.NewRoot(t, pki.Options{CommonName: "Keys Root"})
	leaf, key := root.Leaf(t, pki.Options{CommonName: "keys-dev"})
	pass := []byte("correct horse battery staple")
	encrypted, err := pki.MarshalPrivateKeyPEM(key, pass)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(encrypted), "ENCRYPTED PRIVATE KEY") {
		t.Fatalf("the fixture key is not encrypted:\n%s", encrypted)
	}
	plain, _ := pki.MarshalPrivateKeyPEM(key, nil)
	certFile := testutil.WriteFile(t, dir, "device.pem", pki.EncodePEM(leaf, root.Cert))
	keyFile := testutil.WriteFile(t, dir, "device.key", encrypted)
	plainFile := testutil.WriteFile(t, dir, "plain.key", plain)
	_, otherKey, _ := pki.NewSelfSigned(pki.Options{CommonName: "other"})
	otherPEM, _ := pki.MarshalPrivateKeyPEM(otherKey, pass)
	otherFile := testutil.WriteFile(t, dir, "other.key", otherPEM)

	t.Run("ok/passphrase", func(t *testing.T) {
		c, err := client.LoadX509KeyPair(certFile, keyFile, pass)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Certificate) != 2 || string(c.Certificate[0]) != string(leaf.Raw) || string(c.Certificate[1]) != string(root.Cert.Raw) {
			t.Errorf("chain of %d certificates, want leaf then root", len(c.Certificate))
		}
		if c.Leaf == nil || c.Leaf.Subject.CommonName != "keys-dev" {
			t.Errorf("Leaf = %v", c.Leaf)
		}
		signer, ok := c.PrivateKey.(crypto.Signer)
		if !ok {
			t.Fatalf("PrivateKey is %T, not a crypto.Signer", c.PrivateKey)
		}
		if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
			t.Error("the loaded key is not the certificate's")
		}
	})
	t.Run("ok/unencrypted-key-without-passphrase", func(t *testing.T) {
		if _, err := client.LoadX509KeyPair(certFile, plainFile, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fail/wrong-passphrase", func(t *testing.T) {
		_, err := client.LoadX509KeyPair(certFile, keyFile, []byte("wrong"))
		if !errors.Is(err, pki.ErrWrongPassphrase) {
			t.Errorf("err = %v, want pki.ErrWrongPassphrase", err)
		}
	})
	t.Run("fail/missing-passphrase", func(t *testing.T) {
		_, err := client.LoadX509KeyPair(certFile, keyFile, nil)
		if !errors.Is(err, pki.ErrPassphraseRequired) {
			t.Errorf("err = %v, want pki.ErrPassphraseRequired", err)
		}
	})
	t.Run("fail/key-of-another-certificate", func(t *testing.T) {
		_, err := client.LoadX509KeyPair(certFile, otherFile, pass)
		if err == nil || !strings.Contains(err.Error(), "does not belong to the device certificate") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("fail/missing-file", func(t *testing.T) {
		_, err := client.LoadX509KeyPair(filepath.Join(dir, "nope.pem"), keyFile, pass)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("fail/key-file-as-certificate", func(t *testing.T) {
		if _, err := client.LoadX509KeyPair(keyFile, keyFile, pass); err == nil {
			t.Error("no error")
		}
	})
	t.Run("ok/legacy-pem-encryption", func(t *testing.T) {
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rleaf, _ := root.Leaf(t, pki.Options{CommonName: "legacy-dev", Key: rk})
		//lint:ignore SA1019 legacy PEM encryption is what old openssl writes
		blk, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), pass, x509.PEMCipherAES256)
		if err != nil {
			t.Fatal(err)
		}
		cf := testutil.WriteFile(t, dir, "legacy.pem", pki.EncodePEM(rleaf))
		kf := testutil.WriteFile(t, dir, "legacy.key", pem.EncodeToMemory(blk))
		c, err := client.LoadX509KeyPair(cf, kf, pass)
		if err != nil {
			t.Fatal(err)
		}
		if c.Leaf.Subject.CommonName != "legacy-dev" {
			t.Errorf("Leaf %v", c.Leaf.Subject)
		}
	})
}

// TestSASToken: the client's token verifies with the server's parser, and
// reproduces a SAS test vector of docs/protocol.md byte for byte.
func TestSASToken(t *testing.T) {
	const (
		docGroupKey = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
		docID       = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
		docDevKey   = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	)
	gk, _ := base64.StdEncoding.DecodeString(docGroupKey)
	dk := client.DeriveKey(gk, docID)
	if got := base64.StdEncoding.EncodeToString(dk); got != docDevKey {
		t.Fatalf("DeriveKey = %s, want %s", got, docDevKey)
	}
	if string(dk) != string(sas.DeriveDeviceKey(gk, docID)) {
		t.Error("client.DeriveKey and sas.DeriveDeviceKey disagree")
	}
	tok := client.SASToken("0ne00111111", docID, dk, time.Unix(1700000000, 0))
	want := "SharedAccessSignature sr=0ne00111111%2fregistrations%2f" + docID + "&sig=LwAx%2BRfQDq37RAHvptYP8R3382xvZ%2FBntAGlh8Wmu18%3D&se=1700000000&skn=registration"
	if tok != want {
		t.Errorf("SASToken =\n %s\nwant\n %s", tok, want)
	}

	for _, tc := range []struct{ scope, id string }{
		{"0ne00111111", "dev-01"},
		{"0ne0045B3C6", "Dev.With:Colon_and-Caps"},
	} {
		expiry := time.Now().Add(90 * time.Minute)
		key := client.DeriveKey([]byte("group-key-0123456789"), tc.id)
		p, err := sas.Parse(client.SASToken(tc.scope, tc.id, key, expiry))
		if err != nil {
			t.Fatal(err)
		}
		if !p.Verify(key) {
			t.Errorf("%s/%s: the token does not verify with its key", tc.scope, tc.id)
		}
		if p.Verify(append([]byte{}, key[1:]...)) {
			t.Errorf("%s/%s: the token verifies with another key", tc.scope, tc.id)
		}
		if !p.MatchesDevice(tc.scope, tc.id) || p.MatchesDevice(tc.scope, tc.id+"x") {
			t.Errorf("%s/%s: resource %q", tc.scope, tc.id, p.Resource)
		}
		if p.KeyName != "registration" || p.Expiry.Unix() != expiry.Unix() || p.Expired(time.Now()) {
			t.Errorf("%s/%s: skn %q, expiry %v", tc.scope, tc.id, p.KeyName, p.Expiry)
		}
	}
}
