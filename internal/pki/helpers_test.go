package pki

import (
	"crypto"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// openssl runs the openssl command in dir and returns its standard output.
// openssl is always installed where dpsd is built and tested, so its absence
// fails the test rather than skipping it.
func openssl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := opensslErr(dir, args...)
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func opensslErr(dir string, args ...string) (string, error) {
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeTestFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readTestFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newKeyPEM generates a key and encodes it as unencrypted PKCS#8 PEM.
func newKeyPEM(t testing.TB, kind KeyType) (crypto.Signer, []byte) {
	t.Helper()
	key, err := GenerateKey(kind)
	if err != nil {
		t.Fatal(err)
	}
	p, err := MarshalPrivateKeyPEM(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return key, p
}

// testChain is a root, an intermediate and a device certificate.
type testChain struct {
	root, inter, leaf          *x509.Certificate
	rootKey, interKey, leafKey crypto.Signer
}

func newTestChain(t testing.TB, leafCN string) *testChain {
	t.Helper()
	var ch testChain
	var err error
	if ch.root, ch.rootKey, err = NewRootCA(Options{CommonName: "Azure IoT Hub CA Cert Test Only"}); err != nil {
		t.Fatal(err)
	}
	if ch.inter, ch.interKey, err = NewIntermediateCA(Options{CommonName: "Azure IoT Hub Intermediate Cert Test Only"}, ch.root, ch.rootKey); err != nil {
		t.Fatal(err)
	}
	if ch.leaf, ch.leafKey, err = NewLeaf(Options{CommonName: leafCN}, ch.inter, ch.interKey); err != nil {
		t.Fatal(err)
	}
	return &ch
}
