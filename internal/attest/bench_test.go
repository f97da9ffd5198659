package attest_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store/cache"
	"github.com/dpsd/dpsd/internal/testutil"
)

// The attestation of one registration, as the pipeline runs it: the store's
// reads (SQLite) and the checks, without TLS or HTTP; and through the cache
// dpsd puts in front of the store (cached/...), synced before each
// attestation as the pipeline syncs it before each request.
// docs/benchmarks.md says how to run them.

// attestors are the benchmarks' two attestors: on the store, and on a
// cache of it (with the Sync to run before each attestation).
func attestors(e *env) []struct {
	name string
	a    *attest.Attestor
	sync func(context.Context) error
} {
	c := cache.New(e.Store)
	return []struct {
		name string
		a    *attest.Attestor
		sync func(context.Context) error
	}{
		{"", e.a, func(context.Context) error { return nil }},
		{"cached/", &attest.Attestor{Store: c, Log: e.a.Log, Now: e.a.Now}, c.Sync},
	}
}

// BenchmarkX509 attests an X.509 device: a CA-issued P-256 leaf through a
// verified CA (an enrollment miss, the CA and its group found by
// thumbprint, the chain verified), and a self-signed certificate of an
// individual enrollment; crypto/x509's own verification of the same chain
// for comparison.
func BenchmarkX509(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	root := e.VerifiedRoot("bench-root", pki.Options{CommonName: "Bench Root"})
	e.PutGroup(provtest.CAGroup("bench-group", "bench-root"))
	leaf, _ := root.Leaf(b, pki.Options{CommonName: "bench-dev"})
	self, _ := testutil.SelfSigned(b, pki.Options{CommonName: "bench-self"})
	e.PutIndividual(provtest.X509Individual("bench-self", self, nil))
	for _, bc := range []struct {
		name, id string
		chain    []*x509.Certificate
	}{
		{"ca-issued-p256-via-verified-ca", "bench-dev", []*x509.Certificate{leaf, root.Cert}},
		{"self-signed-individual", "bench-self", []*x509.Certificate{self}},
	} {
		for _, at := range attestors(e) {
			b.Run(at.name+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				defer testutil.CPUPerOp(b)()
				for b.Loop() {
					if err := at.sync(ctx); err != nil {
						b.Fatal(err)
					}
					if _, err := at.a.X509(ctx, bc.id, bc.chain); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	b.Run("crypto-x509-verify-only", func(b *testing.B) {
		b.ReportAllocs()
		roots := x509.NewCertPool()
		roots.AddCert(root.Cert)
		opts := x509.VerifyOptions{Roots: roots, CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for b.Loop() {
			if _, err := leaf.Verify(opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSymmetricKey attests a SAS token: of an individual enrollment,
// and of a group device, found through the group of its last registration
// (the hint) or by trying every symmetric-key group (here 10).
func BenchmarkSymmetricKey(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	ind := e.PutIndividual(provtest.SymIndividual("bench-ind"))
	indKey, _ := provtest.Keys(b, ind.Attestation)
	var groupKey []byte
	for i := range 10 {
		g := e.PutGroup(provtest.SymGroup(string(rune('a'+i)) + "-bench-group"))
		groupKey, _ = provtest.Keys(b, g.Attestation)
	}
	lastGroup := "j-bench-group" // the last one tried without a hint
	for _, bc := range []struct {
		name, id, hint string
		key            []byte
	}{
		{"individual", "bench-ind", "", indKey},
		{"group-with-hint", "bench-dev", lastGroup, sas.DeriveDeviceKey(groupKey, "bench-dev")},
		{"group-of-10-without-hint", "bench-dev", "", sas.DeriveDeviceKey(groupKey, "bench-dev")},
	} {
		for _, at := range attestors(e) {
			b.Run(at.name+bc.name, func(b *testing.B) {
				b.ReportAllocs()
				tok := e.DeviceToken(bc.id, bc.key)
				defer testutil.CPUPerOp(b)()
				for b.Loop() {
					if err := at.sync(ctx); err != nil {
						b.Fatal(err)
					}
					if _, err := at.a.SymmetricKey(ctx, scope, bc.id, tok, bc.hint); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
