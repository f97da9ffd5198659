package attest_test

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// fuzzInstance is an instance with something for every path of the
// attestor: a verified root and a group on it, a group on an intermediate's
// signing certificate, an individual X.509 enrollment, a symmetric-key
// group and individual enrollment.
type fuzzInstance struct {
	a     *attest.Attestor
	scope string
	pool  []*x509.Certificate // certificates a fuzzed chain is built of
	der   []byte              // the DER of a valid chain, a seed
	key   []byte              // the symmetric-key group's key
}

func newFuzzInstance(f *testing.F) *fuzzInstance {
	st, inst, _ := provtest.OpenStore(f)
	f.Cleanup(func() { st.Close() })
	in := provtest.Instance{T: f, Store: st, Scope: inst.IDScope}
	root := in.VerifiedRoot("fz-root", pki.Options{CommonName: "Fuzz Root"})
	in.PutGroup(provtest.CAGroup("fz-ca-group", "fz-root"))
	inter := root.Intermediate(f, pki.Options{CommonName: "Fuzz Intermediate"})
	in.PutGroup(provtest.SigningGroup("fz-signing-group", inter.Cert))
	leaf, _ := inter.Leaf(f, pki.Options{CommonName: "fz-dev"})
	self, _ := testutil.SelfSigned(f, pki.Options{CommonName: "fz-self"})
	in.PutIndividual(provtest.X509Individual("fz-self", self, nil))
	other := testutil.NewRoot(f, pki.Options{CommonName: "Fuzz Intermediate"}) // a rogue of the same name
	gk, _ := provtest.Keys(f, in.PutGroup(provtest.SymGroup("fz-sym")).Attestation)
	in.PutIndividual(provtest.SymIndividual("fz-sym-dev"))
	der := append(append(append([]byte{}, leaf.Raw...), inter.Cert.Raw...), root.Cert.Raw...)
	return &fuzzInstance{
		a:     &attest.Attestor{Store: st, Log: slog.New(slog.DiscardHandler)},
		scope: inst.IDScope,
		pool:  []*x509.Certificate{leaf, inter.Cert, root.Cert, self, other.Cert},
		der:   der,
		key:   gk,
	}
}

// refusedOrIdentified fails t unless attestation either identified the
// device or refused it with a 401 401002, or met a store failure.
func refusedOrIdentified(t *testing.T, id *attest.Identity, err error) {
	t.Helper()
	var e *dpserr.Error
	switch {
	case err == nil && (id == nil || id.Enrollment() == nil):
		t.Fatal("no error and no enrollment")
	case err != nil && id != nil:
		t.Fatalf("an identity and an error: %v", err)
	case err != nil && errors.As(err, &e) && (e.Status != http.StatusUnauthorized || e.Code != dpserr.CodeUnauthorized):
		t.Fatalf("refused with %d %d: %v", e.Status, e.Code, err)
	case err != nil && !errors.As(err, &e):
		t.Fatalf("not a DPS error: %v", err)
	}
}

// FuzzX509Chain presents certificate chains to the attestor: DER that
// may not parse, and chains built from real certificates in any order,
// repeated, too long, with a rogue of an intermediate's name. It must
// identify or refuse, never panic or fail otherwise.
func FuzzX509Chain(f *testing.F) {
	fi := newFuzzInstance(f)
	f.Add(fi.der, []byte{}, "fz-dev")
	f.Add([]byte{}, []byte{0, 1, 2}, "fz-dev")
	f.Add([]byte{}, []byte{0, 4, 2}, "fz-dev")
	f.Add([]byte{}, []byte{3}, "fz-self")
	f.Add([]byte{}, []byte{2, 1, 0}, "Fuzz Root")
	f.Add([]byte{}, []byte{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2}, "fz-dev")
	f.Add(fi.der[:len(fi.der)/2], []byte{1}, "fz-dev")
	f.Fuzz(func(t *testing.T, der, order []byte, registrationID string) {
		var chain []*x509.Certificate
		if certs, err := x509.ParseCertificates(der); err == nil {
			chain = certs
		}
		for _, b := range order {
			if len(chain) >= 16 {
				break
			}
			chain = append(chain, fi.pool[int(b)%len(fi.pool)])
		}
		id, err := fi.a.X509(context.Background(), registrationID, chain)
		refusedOrIdentified(t, id, err)
		if err == nil && !strings.EqualFold(chain[0].Subject.CommonName, registrationID) &&
			(len(chain[0].DNSNames) == 0 || !strings.EqualFold(chain[0].DNSNames[0], registrationID)) {
			t.Fatalf("identified %q with a certificate for %q", registrationID, chain[0].Subject.CommonName)
		}
	})
}

// FuzzSymmetricKeyToken presents SAS tokens to the attestor: valid ones of
// a group device, of an individual enrollment, and anything else. It must
// identify or refuse, never panic or fail otherwise.
func FuzzSymmetricKeyToken(f *testing.F) {
	fi := newFuzzInstance(f)
	exp := time.Now().Add(time.Hour)
	f.Add(sas.New(sas.DeviceResource(fi.scope, "fz-grp-dev"), "registration", sas.DeriveDeviceKey(fi.key, "fz-grp-dev"), exp, true), "fz-grp-dev", "fz-sym")
	f.Add(sas.New(sas.DeviceResource(fi.scope, "fz-grp-dev"), "", fi.key, exp, false), "fz-grp-dev", "")
	f.Add("SharedAccessSignature sr="+fi.scope+"%2fregistrations%2ffz-sym-dev&sig=AAAA&se=9999999999", "fz-sym-dev", "")
	f.Add("SharedAccessSignature sr=x&sig=AAAA&se=9223372036854775807&skn=registration", "x", "nope")
	f.Fuzz(func(t *testing.T, token, registrationID, hint string) {
		id, err := fi.a.SymmetricKey(context.Background(), fi.scope, registrationID, token, hint)
		refusedOrIdentified(t, id, err)
	})
}
