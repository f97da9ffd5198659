package provisioning_test

import (
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
)

// TestEachRequestSyncs: the pipeline reads the groups through a cache that
// already holds them, and syncs it when each device request arrives: a
// write committed between two registrations decides the second.
func TestEachRequestSyncs(t *testing.T) {
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	d := symGroupDevice(t, h, "sync-dev")
	if err := h.Pipeline.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if op := h.provision(t, d.cred, d.id); op.Status != dps.StatusAssigned {
		t.Fatalf("first registration: %s", op.Status)
	}
	g, err := h.Store.Group(t.Context(), "grp-re-sym")
	if err != nil {
		t.Fatal(err)
	}
	g.ProvisioningStatus = dps.ProvisioningDisabled
	if _, err := h.Store.PutGroup(t.Context(), g, g.Etag); err != nil {
		t.Fatal(err)
	}
	if op := h.provision(t, d.cred, d.id); op.Status != dps.StatusDisabled {
		t.Fatalf("registration after the group was disabled: %s", op.Status)
	}
}
