// Package storetest is the contract suite of store.Store: every
// implementation runs it, against a real database, from its own tests.
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openForTest(t) })
//	}
//
// The suite checks the rules in the documentation of package store; where a
// rule is this suite's reading of that documentation, the test says so.
package storetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// Run runs the contract suite. open must return a new, empty store each
// time it is called; Run closes the store when the subtest that opened it
// ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	certs := newCerts(t)
	opener := func(t *testing.T) store.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
	t.Run("instance", func(t *testing.T) { testInstance(t, opener) })
	t.Run("enrollment", func(t *testing.T) {
		testRecords(t, opener, enrollmentKind())
		t.Run("put/round-trips every field", func(t *testing.T) { testEnrollmentRoundTrip(t, opener, certs) })
	})
	t.Run("group", func(t *testing.T) {
		testRecords(t, opener, groupKind())
		t.Run("put/round-trips every field", func(t *testing.T) { testGroupRoundTrip(t, opener, certs) })
	})
	t.Run("policy", func(t *testing.T) { testRecords(t, opener, policyKind()) })
	t.Run("ca", func(t *testing.T) { testRecords(t, opener, caKind(certs)) })
	t.Run("hub", func(t *testing.T) {
		testRecords(t, opener, hubKind())
		t.Run("put/round-trips every field", func(t *testing.T) { testHubRoundTrip(t, opener) })
	})
	t.Run("issuing ca", func(t *testing.T) {
		testRecords(t, opener, issuingCAKind(certs))
		t.Run("put/round-trips every field", func(t *testing.T) { testIssuingCARoundTrip(t, opener, certs) })
	})
	t.Run("issued certificate", func(t *testing.T) { testIssued(t, opener, certs) })
	t.Run("registration", func(t *testing.T) {
		testRecords(t, opener, registrationKind())
		testRegistrationPlacement(t, opener)
	})
	t.Run("runtime setting", func(t *testing.T) { testRecords(t, opener, runtimeSettingKind()) })
	t.Run("paging", func(t *testing.T) { testPaging(t, opener) })
	t.Run("lists", func(t *testing.T) { testLists(t, opener, certs) })
	t.Run("group index", func(t *testing.T) { testGroupIndex(t, opener, certs) })
	t.Run("ca index", func(t *testing.T) { testCAIndex(t, opener, certs) })
	t.Run("save registration", func(t *testing.T) { testSaveRegistration(t, opener) })
	t.Run("operation", func(t *testing.T) { testOperations(t, opener) })
	t.Run("job", func(t *testing.T) { testJobs(t, opener) })
	t.Run("concurrency", func(t *testing.T) { testConcurrency(t, opener) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, opener) })
	t.Run("restore", func(t *testing.T) {
		t.Run("enrollment", func(t *testing.T) { testRestore(t, opener, enrollmentKind()) })
		t.Run("group", func(t *testing.T) { testRestore(t, opener, groupKind()) })
		t.Run("policy", func(t *testing.T) { testRestore(t, opener, policyKind()) })
		t.Run("ca", func(t *testing.T) { testRestore(t, opener, caKind(certs)) })
		t.Run("hub", func(t *testing.T) { testRestore(t, opener, hubKind()) })
		t.Run("issuing ca", func(t *testing.T) { testRestore(t, opener, issuingCAKind(certs)) })
		t.Run("registration", func(t *testing.T) { testRestore(t, opener, registrationKind()) })
		testRestoreBatches(t, opener, certs)
		testRestoreAll(t, opener)
	})
	t.Run("config version", func(t *testing.T) { testConfigVersion(t, opener, certs) })
	t.Run("close", func(t *testing.T) { testClose(t, opener) })
}

// Test certificates.

type testCert struct {
	cert  *x509.Certificate
	der   []byte
	pem   string
	thumb string // SHA-256, upper-case hex
}

// PEM, base64 DER and base64 PEM: the encodings DPS accepts.
func (c testCert) pemText() string { return c.pem }
func (c testCert) b64DER() string  { return base64.StdEncoding.EncodeToString(c.der) }
func (c testCert) b64PEM() string  { return base64.StdEncoding.EncodeToString([]byte(c.pem)) }
func (c testCert) subject() []byte { return c.cert.RawSubject }
func (c testCert) info() *dps.X509CertificateInfo {
	s1 := sha1.Sum(c.der)
	return &dps.X509CertificateInfo{
		SubjectName:      c.cert.Subject.String(),
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256Thumbprint: c.thumb,
		IssuerName:       c.cert.Issuer.String(),
		NotBeforeUtc:     dps.NewTime(c.cert.NotBefore),
		NotAfterUtc:      dps.NewTime(c.cert.NotAfter),
		SerialNumber:     strings.ToUpper(c.cert.SerialNumber.Text(16)),
		Version:          c.cert.Version,
	}
}

// withInfo is a certificate as the caller stores it: the input encoding and
// the info it derived.
func (c testCert) withInfo(encoded string) *dps.X509CertificateWithInfo {
	return &dps.X509CertificateWithInfo{Certificate: encoded, Info: c.info()}
}

type testCerts struct{ a, b, c testCert }

func newCerts(t *testing.T) testCerts {
	// Certificate A's DER ends in a byte that is ASCII white space, so that
	// a store which trims decoded DER (as one would trim PEM) is caught
	// every time rather than in one run out of forty.
	var a testCert
	for range 10000 {
		a = newCert(t, "Signer A")
		if strings.IndexByte(" \t\n\v\f\r", a.der[len(a.der)-1]) >= 0 {
			break
		}
	}
	return testCerts{a: a, b: newCert(t, "Signer B"), c: newCert(t, "Signer C")}
}

// newCert makes a self-signed ECDSA P-256 CA certificate.
func newCert(t *testing.T, cn string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"dpsd test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return testCert{
		cert:  cert,
		der:   der,
		pem:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		thumb: strings.ToUpper(hex.EncodeToString(sum[:])),
	}
}

// Helpers.

// wantErr fails t unless err wraps target.
func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// must fails t on err.
func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func tm(t *dps.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func symmetricKey(n int) *dps.AttestationMechanism {
	return &dps.AttestationMechanism{
		Type: dps.AttestationSymmetricKey,
		SymmetricKey: &dps.SymmetricKeyAttestation{
			PrimaryKey:   base64.StdEncoding.EncodeToString([]byte(strings.Repeat("p", 32) + string(rune('a'+n%26)))),
			SecondaryKey: base64.StdEncoding.EncodeToString([]byte(strings.Repeat("s", 32) + string(rune('a'+n%26)))),
		},
	}
}

func groupIDs(gs []*dps.EnrollmentGroup) []string { return sortedIDs(gs, groupKind().id) }

func caNames(cs []*store.CACertificate) []string { return sortedIDs(cs, caKind(testCerts{}).id) }

// sortedIDs returns the IDs of records, sorted.
func sortedIDs[T any](vs []T, id func(T) string) []string {
	ids := make([]string, 0, len(vs))
	for _, v := range vs {
		ids = append(ids, id(v))
	}
	slices.Sort(ids)
	return ids
}

// sameSet fails t unless got and want hold the same strings, in any order.
func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got %q, want %q", what, g, w)
	}
}

// bg is a context for one test.
func bg(t *testing.T) context.Context { return t.Context() }
