package provisioning_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
)

// readsSpy notes, for each read of a device's enrollment or record, whether
// its request was marked store.WithDeviceReads.
type readsSpy struct {
	store.Store
	mu    sync.Mutex
	reads []string // "enrollment" or "registration", with " unmarked"
}

func (s *readsSpy) note(what string, ctx context.Context) {
	if store.DeviceReadsFrom(ctx) == nil {
		what += " unmarked"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads = append(s.reads, what)
}

func (s *readsSpy) Enrollment(ctx context.Context, id string) (*dps.IndividualEnrollment, error) {
	s.note("enrollment", ctx)
	return s.Store.Enrollment(ctx, id)
}

func (s *readsSpy) Registration(ctx context.Context, id string) (*store.Registration, error) {
	s.note("registration", ctx)
	return s.Store.Registration(ctx, id)
}

func (s *readsSpy) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reads
	s.reads = nil
	slices.Sort(r)
	return r
}

// TestDeviceReadsMarked: a register and a status lookup read the device's
// enrollment and record in a request marked store.WithDeviceReads, so that
// the store may make both reads in one round trip.
func TestDeviceReadsMarked(t *testing.T) {
	t.Parallel()
	spy := &readsSpy{}
	h := newHarness(t, options{pipelineStore: func(s store.Store) store.Store { spy.Store = s; return spy }})
	h.LinkHub(hub1, 1, true)
	pk, _ := provtest.Keys(t, h.PutIndividual(provtest.SymIndividual("dev-1")).Attestation)
	c := provtest.Cred{SAS: h.DeviceToken("dev-1", pk)}
	want := []string{"enrollment", "registration"}
	for i := range 2 { // a first registration, then a re-registration
		h.register(t, c, "dev-1").must(t, "register")
		if got := spy.take(); !slices.Equal(got, want) {
			t.Errorf("register %d read %q, want %q", i+1, got, want)
		}
	}
	h.lookup(t, c, "dev-1").must(t, "status lookup")
	if got := spy.take(); !slices.Equal(got, want) {
		t.Errorf("status lookup read %q, want %q", got, want)
	}
}
