package pki

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func verifyChain(leaf *x509.Certificate, root *x509.Certificate, usage x509.ExtKeyUsage, inters ...*x509.Certificate) error {
	roots, pool := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range inters {
		pool.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestChain(t *testing.T) {
	ch := newTestChain(t, "device-01")
	if err := verifyChain(ch.leaf, ch.root, x509.ExtKeyUsageClientAuth, ch.inter); err != nil {
		t.Fatalf("device chain does not verify for client auth: %v", err)
	}
	if err := verifyChain(ch.leaf, ch.root, x509.ExtKeyUsageServerAuth, ch.inter); err == nil {
		t.Fatal("device certificate verifies for server auth")
	}
	for name, c := range map[string]*x509.Certificate{"root": ch.root, "intermediate": ch.inter} {
		if !c.BasicConstraintsValid || !c.IsCA || c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || len(c.ExtKeyUsage) != 0 {
			t.Errorf("%s: CA %v, key usage %v, EKU %v", name, c.IsCA, c.KeyUsage, c.ExtKeyUsage)
		}
		if c.MaxPathLen != -1 {
			t.Errorf("%s: path length %d; want none", name, c.MaxPathLen)
		}
	}
	leaf := ch.leaf
	if !leaf.BasicConstraintsValid || leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature ||
		!slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("leaf: CA %v, key usage %v, EKU %v", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if leaf.Subject.CommonName != "device-01" || leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("leaf: %s %s", leaf.Subject, leaf.SignatureAlgorithm)
	}
	// Key identifiers link each certificate to its issuer.
	for _, pair := range [][2]*x509.Certificate{{ch.leaf, ch.inter}, {ch.inter, ch.root}, {ch.root, ch.root}} {
		c, issuer := pair[0], pair[1]
		if len(c.SubjectKeyId) != 20 || !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) {
			t.Errorf("%s: SKID %X AKID %X; issuer SKID %X", c.Subject, c.SubjectKeyId, c.AuthorityKeyId, issuer.SubjectKeyId)
		}
	}
	if d := time.Until(leaf.NotAfter) - DefaultDays*24*time.Hour; d > time.Minute || d < -time.Minute {
		t.Errorf("leaf expires %s; want in %d days", leaf.NotAfter, DefaultDays)
	}
	if time.Now().Before(leaf.NotBefore) {
		t.Errorf("leaf not valid yet: %s", leaf.NotBefore)
	}
}

func TestSelfSigned(t *testing.T) {
	c, key, err := NewSelfSigned(Options{CommonName: "my-x509-device", KeyType: KeyRSA2048, Days: 30})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := key.(*rsa.PrivateKey); !ok {
		t.Fatalf("key %T", key)
	}
	if c.IsCA || !c.BasicConstraintsValid || c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment ||
		!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("CA %v, key usage %v, EKU %v, %s", c.IsCA, c.KeyUsage, c.ExtKeyUsage, c.SignatureAlgorithm)
	}
	if !bytes.Equal(c.RawIssuer, c.RawSubject) || !bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
		t.Error("not self-issued, or AKID != SKID")
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Errorf("self signature: %v", err)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d != 30*24*time.Hour+backdate {
		t.Errorf("validity %s", d)
	}
}

func TestServerLeaf(t *testing.T) {
	ch := newTestChain(t, "device-01")
	c, _, err := NewLeaf(Options{
		CommonName:  "dpsd",
		Hosts:       ServerHosts("dps.example.com", "localhost", "10.0.0.1"),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ch.root, ch.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.DNSNames, []string{"localhost", "dps.example.com"}) || len(c.IPAddresses) != 3 ||
		!c.IPAddresses[1].Equal(net.IPv6loopback) || !c.IPAddresses[2].Equal(net.ParseIP("10.0.0.1")) {
		t.Fatalf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ch.root)
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "dps.example.com"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
}

// TestFixtureOptions builds the odd certificates other packages' tests need.
func TestFixtureOptions(t *testing.T) {
	ch := newTestChain(t, "device-01")
	now := time.Now()

	expired, _, err := NewLeaf(Options{CommonName: "expired", NotAfter: now.Add(-time.Hour)}, ch.inter, ch.interKey)
	if err != nil {
		t.Fatal(err)
	}
	if !expired.NotAfter.Before(now) || expired.NotAfter.Sub(expired.NotBefore) != DefaultDays*24*time.Hour {
		t.Errorf("expired: %s..%s", expired.NotBefore, expired.NotAfter)
	}
	if err := verifyChain(expired, ch.root, x509.ExtKeyUsageClientAuth, ch.inter); err == nil {
		t.Error("expired leaf verifies")
	}

	future, _, err := NewLeaf(Options{CommonName: "future", NotBefore: now.Add(24 * time.Hour), Days: 2}, ch.inter, ch.interKey)
	if err != nil {
		t.Fatal(err)
	}
	if future.NotAfter.Sub(future.NotBefore) != 48*time.Hour {
		t.Errorf("future: %s..%s", future.NotBefore, future.NotAfter)
	}
	if err := verifyChain(future, ch.root, x509.ExtKeyUsageClientAuth, ch.inter); err == nil {
		t.Error("not-yet-valid leaf verifies")
	}

	serverOnly, _, err := NewLeaf(Options{CommonName: "server-eku", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ch.inter, ch.interKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChain(serverOnly, ch.root, x509.ExtKeyUsageClientAuth, ch.inter); err == nil {
		t.Error("serverAuth-only leaf verifies for client auth")
	}
	noEKU, _, err := NewLeaf(Options{CommonName: "no-eku", ExtKeyUsage: []x509.ExtKeyUsage{}}, ch.inter, ch.interKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(noEKU.ExtKeyUsage) != 0 {
		t.Errorf("no-eku: %v", noEKU.ExtKeyUsage)
	}

	notCA, notCAKey, err := NewIntermediateCA(Options{CommonName: "not a CA", IsCA: new(false)}, ch.root, ch.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if notCA.IsCA || !notCA.BasicConstraintsValid {
		t.Fatalf("intermediate IsCA %v", notCA.IsCA)
	}
	under, _, err := NewLeaf(Options{CommonName: "under-non-ca"}, notCA, notCAKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChain(under, ch.root, x509.ExtKeyUsageClientAuth, notCA); err == nil {
		t.Error("leaf under a non-CA intermediate verifies")
	}

	pathZero, _, err := NewIntermediateCA(Options{CommonName: "pathlen 0", MaxPathLen: new(0)}, ch.root, ch.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if pathZero.MaxPathLen != 0 || !pathZero.MaxPathLenZero {
		t.Errorf("pathlen: %d %v", pathZero.MaxPathLen, pathZero.MaxPathLenZero)
	}

	rsaRoot, rsaKey, err := NewRootCA(Options{CommonName: "rsa root", KeyType: KeyRSA2048})
	if err != nil {
		t.Fatal(err)
	}
	sha1Leaf, _, err := NewLeaf(Options{CommonName: "sha1", SignatureAlgorithm: x509.SHA1WithRSA}, rsaRoot, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	if sha1Leaf.SignatureAlgorithm != x509.SHA1WithRSA {
		t.Fatalf("algorithm %s", sha1Leaf.SignatureAlgorithm)
	}
	if err := verifyChain(sha1Leaf, rsaRoot, x509.ExtKeyUsageClientAuth); err == nil || !strings.Contains(err.Error(), "insecure algorithm SHA1-RSA") {
		t.Errorf("SHA-1 leaf: %v", err)
	}

	key, err := GenerateKey(KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	withKey, gotKey, err := NewLeaf(Options{CommonName: "given-key", Key: key, Subject: pkix.Name{Organization: []string{"Contoso"}}}, ch.inter, ch.interKey)
	if err != nil {
		t.Fatal(err)
	}
	if gotKey != key || !KeyMatches(key, withKey.PublicKey) || Info(withKey).SubjectName != "O=Contoso, CN=given-key" {
		t.Errorf("given key not used, or subject %q", Info(withKey).SubjectName)
	}
}

// TestLeafForPublicKey issues for a key held elsewhere, as for a CSR: the
// certificate carries that key, no key is returned, and the CRL
// distribution point is written.
func TestLeafForPublicKey(t *testing.T) {
	ch := newTestChain(t, "device-01")
	for _, kt := range []KeyType{KeyECDSAP256, KeyRSA2048} {
		devKey, err := GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		c, key, err := NewLeaf(Options{CommonName: "device-02", PublicKey: devKey.Public(), CRLDistributionPoints: []string{"https://dps.example.com/crl/line.crl"}}, ch.inter, ch.interKey)
		if err != nil {
			t.Fatal(err)
		}
		if key != nil || !KeyMatches(devKey, c.PublicKey) {
			t.Fatalf("%s: returned key %v; certificate key matches: %v", kt, key, KeyMatches(devKey, c.PublicKey))
		}
		wantUsage := x509.KeyUsageDigitalSignature
		if kt == KeyRSA2048 {
			wantUsage |= x509.KeyUsageKeyEncipherment
		}
		if c.KeyUsage != wantUsage || !slices.Equal(c.CRLDistributionPoints, []string{"https://dps.example.com/crl/line.crl"}) {
			t.Errorf("%s: key usage %v, CRL distribution points %q", kt, c.KeyUsage, c.CRLDistributionPoints)
		}
		if err := verifyChain(c, ch.root, x509.ExtKeyUsageClientAuth, ch.inter); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
	}
}

func TestIssueRefusals(t *testing.T) {
	ch := newTestChain(t, "device-01")
	now := time.Now()
	tests := map[string]struct {
		run  func() error
		want string
	}{
		"no-cn": {func() error { _, _, err := NewRootCA(Options{}); return err }, "common name is empty"},
		"negative-days": {func() error {
			_, _, err := NewRootCA(Options{CommonName: "x", Days: -1})
			return err
		}, "negative"},
		"after-before-before": {func() error {
			_, _, err := NewRootCA(Options{CommonName: "x", NotBefore: now, NotAfter: now.Add(-time.Second)})
			return err
		}, "is not after NotBefore"},
		"wrong-ca-key": {func() error {
			_, _, err := NewLeaf(Options{CommonName: "x"}, ch.inter, ch.rootKey)
			return err
		}, "does not belong to the CA certificate"},
		"no-ca": {func() error { _, _, err := NewLeaf(Options{CommonName: "x"}, nil, ch.rootKey); return err }, "no issuing CA certificate"},
		"no-ca-key": {func() error {
			_, _, err := NewIntermediateCA(Options{CommonName: "x"}, ch.root, nil)
			return err
		}, "no issuing CA private key"},
		"bad-key-type": {func() error {
			_, _, err := NewRootCA(Options{CommonName: "x", KeyType: "dsa"})
			return err
		}, "unknown key type"},
		"negative-pathlen": {func() error {
			_, _, err := NewRootCA(Options{CommonName: "x", MaxPathLen: new(-1)})
			return err
		}, "path length"},
		"verification-no-code": {func() error { _, err := NewVerificationCert("", ch.root, ch.rootKey); return err }, "verification code is empty"},
		"public-key-self-signed": {func() error {
			_, _, err := NewSelfSigned(Options{CommonName: "x", PublicKey: ch.leaf.PublicKey})
			return err
		}, "needs an issuer"},
		"public-key-and-key": {func() error {
			_, _, err := NewLeaf(Options{CommonName: "x", PublicKey: ch.leaf.PublicKey, Key: ch.leafKey}, ch.inter, ch.interKey)
			return err
		}, "and no Key"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestProofOfPossession(t *testing.T) {
	ch := newTestChain(t, "device-01")
	const code = "3D85D8D3A3A1A7B1C41EE6D8D57E2C2B9E8F20CD45A3D8D2"
	for name, ca := range map[string]struct {
		cert *x509.Certificate
		key  crypto.Signer
	}{"root": {ch.root, ch.rootKey}, "intermediate": {ch.inter, ch.interKey}} {
		t.Run("ok/"+name, func(t *testing.T) {
			v, err := NewVerificationCert(code, ca.cert, ca.key)
			if err != nil {
				t.Fatal(err)
			}
			if v.Subject.CommonName != code || v.IsCA {
				t.Fatalf("subject %s, CA %v", v.Subject, v.IsCA)
			}
			if err := VerifyProofOfPossession(ca.cert, v, code); err != nil {
				t.Fatal(err)
			}
			if err := VerifyProofOfPossession(ca.cert, v, strings.ToLower(code)); err != nil {
				t.Fatalf("lower-case code: %v", err)
			}
		})
	}

	// A CA uploaded without CA:TRUE still proves possession with its key.
	plainCert, plainKey, err := NewSelfSigned(Options{CommonName: "not-a-ca"})
	if err != nil {
		t.Fatal(err)
	}
	vPlain, err := NewVerificationCert(code, plainCert, plainKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyProofOfPossession(plainCert, vPlain, code); err != nil {
		t.Fatalf("CA without CA:TRUE: %v", err)
	}

	v, err := NewVerificationCert(code, ch.root, ch.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaRoot, rsaKey, err := NewRootCA(Options{CommonName: "rsa root", KeyType: KeyRSA2048})
	if err != nil {
		t.Fatal(err)
	}
	sha1V, _, err := NewLeaf(Options{CommonName: code, SignatureAlgorithm: x509.SHA1WithRSA}, rsaRoot, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	noCN, _, err := NewLeaf(Options{Subject: pkix.Name{Organization: []string{"x"}}}, ch.root, ch.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	fail := map[string]struct {
		ca, v *x509.Certificate
		code  string
		want  string
	}{
		"fail/other-code":    {ch.root, v, "0000", `subject CN is "` + code + `", not the verification code 0000`},
		"fail/other-ca":      {ch.inter, v, code, "is not signed by the key of CA"},
		"fail/self-signed":   {ch.root, vPlain, code, "is not signed by the key of CA"},
		"fail/sha1":          {rsaRoot, sha1V, code, "SHA1-RSA, which is insecure"},
		"fail/no-cn":         {ch.root, noCN, code, "no subject common name"},
		"fail/no-code":       {ch.root, v, "", "no verification code"},
		"fail/no-ca":         {nil, v, code, "no CA certificate"},
		"fail/no-verif-cert": {ch.root, nil, code, "no verification certificate"},
	}
	for name, tc := range fail {
		t.Run(name, func(t *testing.T) {
			err := VerifyProofOfPossession(tc.ca, tc.v, tc.code)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	ch := newTestChain(t, "device-01")
	certPath := filepath.Join(dir, "chain.pem")
	keyPath := filepath.Join(dir, "key.pem")
	if err := WriteCertificatesFile(certPath, []*x509.Certificate{ch.leaf, ch.inter}, false); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKeyFile(keyPath, ch.leafKey, []byte("1234"), false); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]fs.FileMode{certPath: CertFileMode &^ umask(t), keyPath: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	if err := WriteCertificatesFile(certPath, []*x509.Certificate{ch.leaf}, false); !errors.Is(err, fs.ErrExist) || err.Error() != certPath+" already exists" {
		t.Errorf("second write: %v", err)
	}
	// Overwriting a world-readable file still leaves a 0600 key.
	if err := os.Chmod(keyPath, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WritePrivateKeyFile(keyPath, ch.leafKey, nil, true); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Errorf("overwritten key mode %v", st.Mode().Perm())
	}
	certs, err := ReadCertificatesFile(certPath)
	if err != nil || len(certs) != 2 || !certs[0].Equal(ch.leaf) {
		t.Fatalf("ReadCertificatesFile: %v", err)
	}
	if _, err := ReadPrivateKeyFile(keyPath, nil); err != nil {
		t.Fatalf("ReadPrivateKeyFile: %v", err)
	}
	if err := WritePrivateKeyFile(keyPath, ch.leafKey, []byte("1234"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPrivateKeyFile(keyPath, nil); !errors.Is(err, ErrPassphraseRequired) || !strings.HasPrefix(err.Error(), keyPath+": ") {
		t.Errorf("ReadPrivateKeyFile without passphrase: %v", err)
	}
	if _, err := ReadCertificatesFile(keyPath); err == nil || !strings.Contains(err.Error(), "ENCRYPTED PRIVATE KEY") {
		t.Errorf("ReadCertificatesFile of a key: %v", err)
	}
	if err := WriteCertificatesFile(filepath.Join(dir, "none.pem"), nil, false); err == nil {
		t.Error("writing no certificates succeeded")
	}
}

func umask(t *testing.T) fs.FileMode {
	t.Helper()
	p := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(p, nil, 0o777); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ st.Mode().Perm()
}
