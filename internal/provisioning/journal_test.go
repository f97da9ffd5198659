package provisioning_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
)

// failingJournal is a store whose refusal journal cannot be written.
type failingJournal struct{ store.Store }

func (failingJournal) AddRefusals(context.Context, []*store.Refusal) error {
	return errors.New("the journal table is gone")
}

// TestJournalFailureFailsNoRegistration: with a journal whose every write
// fails, a device still registers, a refused device still gets its precise
// refusal, and the failure is logged without reaching any device.
func TestJournalFailureFailsNoRegistration(t *testing.T) {
	h := newHarness(t, options{journalStore: func(st store.Store) store.Store { return failingJournal{st} }})
	h.LinkHub(hub1, 1, true)
	pk, _ := provtest.Keys(t, h.PutIndividual(provtest.SymIndividual("sym-ok")).Attestation)
	wrong := make([]byte, len(pk))
	for range 3 {
		checkRefusal(t, h.register(t, provtest.Cred{SAS: h.DeviceToken("sym-ok", wrong)}, "sym-ok"),
			http.StatusUnauthorized, dpserr.CodeUnauthorized, "matches neither the primary nor the secondary key")
		if err := h.Journal.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		op := h.provision(t, provtest.Cred{SAS: h.DeviceToken("sym-ok", pk)}, "sym-ok")
		if op.Status != dps.StatusAssigned {
			t.Fatalf("register with a failing journal: status %q, want assigned", op.Status)
		}
	}
	if !strings.Contains(h.logs.String(), "the refusal journal could not be written") {
		t.Errorf("the failed journal write was not logged:\n%s", h.logs.Tail(20))
	}
}
