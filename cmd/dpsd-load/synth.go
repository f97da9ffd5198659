package main

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/enrollment"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// The records of a scale instance. IDs are numbered with a fixed width, so
// that their order as keys is their numeric order.
const (
	scaleDevicePrefix = "scale-dev-"
	scaleGroupPrefix  = "scale-group-"
	scaleCAPrefix     = "scale-ca-"
	scaleHub          = "scale-hub.azure-devices.net"
)

func scaleDeviceID(i int) string { return fmt.Sprintf("%s%08d", scaleDevicePrefix, i) }
func scaleGroupID(i int) string  { return fmt.Sprintf("%s%05d", scaleGroupPrefix, i) }
func scaleCAName(i int) string   { return fmt.Sprintf("%s%05d", scaleCAPrefix, i) }

// scaleKey is a device's symmetric key: derived from the instance's seed,
// so that the load reproduces a million keys from 32 bytes.
func scaleKey(seed []byte, which, registrationID string) []byte {
	m := hmac.New(sha256.New, seed)
	m.Write([]byte(which + "/" + registrationID))
	return m.Sum(nil)
}

// synthStore is a store that holds nothing: it makes up the records of a
// scale instance page by page for dump.Export, which writes them in the
// export format `dpsd import` reads. It implements the calls Export and
// instance.Ensure make; any other panics (the embedded nil interface).
//
// The instance has one linked hub; n individual symmetric-key enrollments
// and a registration record (assigned) for the first r of them; g X.509
// enrollment groups, group i referencing verified root CA i.
type synthStore struct {
	store.Store
	n, r, g  int
	seed     []byte
	at       time.Time
	inst     *store.Instance
	policies []*store.Policy
	cas      []*store.CACertificate
	caByName map[string]*store.CACertificate
}

// newSynthStore makes the CA certificates (their keys are returned for the
// indices keep lists: the load issues device certificates with them).
func newSynthStore(n, r, g int, seed []byte, keep []int) (*synthStore, map[int]crypto.Signer, error) {
	s := &synthStore{n: n, r: r, g: g, seed: seed, at: time.Now().UTC().Add(-time.Hour), caByName: map[string]*store.CACertificate{}}
	s.cas = make([]*store.CACertificate, g)
	keys := make([]crypto.Signer, g)
	if err := parallel(g, func(i int) error {
		c, key, err := pki.NewRootCA(pki.Options{CommonName: scaleCAName(i), Days: 3650})
		if err != nil {
			return err
		}
		s.cas[i] = &store.CACertificate{Name: scaleCAName(i), CertificateDER: c.Raw, SHA256Thumbprint: pki.SHA256Thumbprint(c),
			IsVerified: true, Created: s.at, Updated: s.at}
		keys[i] = key
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("making the CA certificates: %w", err)
	}
	kept := map[int]crypto.Signer{}
	for _, i := range keep {
		kept[i] = keys[i]
	}
	for _, c := range s.cas {
		s.caByName[c.Name] = c
	}
	return s, kept, nil
}

func (s *synthStore) Instance(context.Context) (*store.Instance, error) {
	if s.inst == nil {
		return nil, store.ErrNotFound
	}
	return s.inst, nil
}

func (s *synthStore) InitInstance(_ context.Context, inst *store.Instance) (*store.Instance, error) {
	s.inst = inst
	return inst, nil
}

func (s *synthStore) PutPolicy(_ context.Context, p *store.Policy, _ string) (*store.Policy, error) {
	p.Created, p.Updated = s.at, s.at
	s.policies = append(s.policies, p)
	return p, nil
}

func (s *synthStore) Policies(context.Context) ([]*store.Policy, error) { return s.policies, nil }

func (s *synthStore) CACertificates(context.Context) ([]*store.CACertificate, error) {
	return s.cas, nil
}

func (s *synthStore) CACertificate(_ context.Context, name string) (*store.CACertificate, error) {
	if c, ok := s.caByName[name]; ok {
		return c, nil
	}
	return nil, store.ErrNotFound
}

// A scale instance issues no certificates.

func (s *synthStore) IssuingCAs(context.Context) ([]*store.IssuingCA, error) { return nil, nil }

func (s *synthStore) IssuedCertificates(context.Context, store.IssuedFilter, string, int) (store.Page[*store.IssuedCertificate], error) {
	return store.Page[*store.IssuedCertificate]{}, nil
}

func (s *synthStore) LinkedHubs(context.Context) ([]*store.LinkedHub, error) {
	return []*store.LinkedHub{{Name: scaleHub, AllocationWeight: 1, ApplyAllocationPolicy: true, Created: s.at, Updated: s.at}}, nil
}

func (s *synthStore) Counts(context.Context) (*store.Counts, error) {
	return &store.Counts{Policies: int64(len(s.policies)), CACertificates: int64(s.g), LinkedHubs: 1,
		Groups: int64(s.g), Enrollments: int64(s.n), Registrations: int64(s.r)}, nil
}

func (s *synthStore) Groups(ctx context.Context, after string, limit int) (store.Page[*dps.EnrollmentGroup], error) {
	return synthPage(after, scaleGroupPrefix, s.g, limit, scaleGroupID, func(i int) (*dps.EnrollmentGroup, error) {
		g := &dps.EnrollmentGroup{EnrollmentGroupID: scaleGroupID(i), EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: dps.AttestationX509,
				X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: scaleCAName(i)}}}}}
		if err := enrollment.PrepareGroup(ctx, g, nil, s); err != nil {
			return nil, err
		}
		g.CreatedDateTimeUtc, g.LastUpdatedDateTimeUtc = dps.NewTime(s.at), dps.NewTime(s.at)
		return g, nil
	})
}

func (s *synthStore) Enrollments(_ context.Context, after string, limit int) (store.Page[*dps.IndividualEnrollment], error) {
	return synthPage(after, scaleDevicePrefix, s.n, limit, scaleDeviceID, func(i int) (*dps.IndividualEnrollment, error) {
		id := scaleDeviceID(i)
		e := &dps.IndividualEnrollment{RegistrationID: id, EnrollmentSettings: dps.EnrollmentSettings{
			Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{
				PrimaryKey:   base64.StdEncoding.EncodeToString(scaleKey(s.seed, "primary", id)),
				SecondaryKey: base64.StdEncoding.EncodeToString(scaleKey(s.seed, "secondary", id))}}}}
		if err := enrollment.PrepareIndividual(e, nil); err != nil {
			return nil, err
		}
		e.CreatedDateTimeUtc, e.LastUpdatedDateTimeUtc = dps.NewTime(s.at), dps.NewTime(s.at)
		return e, nil
	})
}

func (s *synthStore) Registrations(_ context.Context, after string, limit int) (store.Page[*store.Registration], error) {
	return synthPage(after, scaleDevicePrefix, s.r, limit, scaleDeviceID, func(i int) (*store.Registration, error) {
		id := scaleDeviceID(i)
		return &store.Registration{Result: &dps.DeviceRegistrationResult{RegistrationID: id, DeviceID: id, AssignedHub: scaleHub,
			Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment,
			CreatedDateTimeUtc: dps.NewTime(s.at), LastUpdatedDateTimeUtc: dps.NewTime(s.at)}}, nil
	})
}

// synthPage is the page of up to limit of n numbered records after the key
// after, as the store's keyset pagination returns them.
func synthPage[T any](after, prefix string, n, limit int, id func(int) string, gen func(int) (T, error)) (store.Page[T], error) {
	var p store.Page[T]
	from := 0
	if after != "" {
		i, err := strconv.Atoi(strings.TrimPrefix(after, prefix))
		if err != nil {
			return p, fmt.Errorf("page key %q", after)
		}
		from = i + 1
	}
	to := min(n, from+limit)
	for i := from; i < to; i++ {
		v, err := gen(i)
		if err != nil {
			return p, err
		}
		p.Items = append(p.Items, v)
	}
	if to < n {
		p.Next = strings.ToLower(id(to - 1))
	}
	return p, nil
}

// scaleCA is a CA of the scale instance whose key the load keeps.
type scaleCA struct {
	Index   int    `json:"index"`
	CertPEM string `json:"certPem"`
	KeyPEM  string `json:"keyPem"`
}

func (s *synthStore) keptCAs(keys map[int]crypto.Signer) ([]scaleCA, error) {
	var out []scaleCA
	for i, k := range keys {
		c, err := x509.ParseCertificate(s.cas[i].CertificateDER)
		if err != nil {
			return nil, err
		}
		pem, err := pki.MarshalPrivateKeyPEM(k, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, scaleCA{Index: i, CertPEM: string(pki.EncodePEM(c)), KeyPEM: string(pem)})
	}
	return out, nil
}
