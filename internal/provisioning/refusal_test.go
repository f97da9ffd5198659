package provisioning_test

import (
	"net/http"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
)

// TestRefusals runs every case of provtest.Refusals — the table the MQTT
// suite runs too — through the HTTPS device API in both modes: 401 401002
// (or the case's 400 or 404) with a precise message on register, on the
// status lookup and on a poll (unless the case's credentials travel in the
// body only), and nothing written. A disabled match answers 202 and a 200 poll with
// status "disabled", and writes no registration record. Every refusal, and
// every disabled outcome, lands in the refusal journal without a secret.
func TestRefusals(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		h := newHarness(t, options{strict: mode.Strict})
		table := provtest.Refusals(h.Instance)
		for name, tc := range table {
			t.Run(name, func(t *testing.T) {
				tc.Skip(t, "https")
				scope := tc.IDScope(h.Scope)
				before := provtest.TakeSnapshot(t, h.db)
				r := h.registerIn(t, tc.Cred, scope, tc.RegistrationID).must(t, "register")
				if tc.Want.Terminal != "" {
					checkDisabled(t, h, tc, r, before)
					return
				}
				checkRefusal(t, r, tc.Want.Status, tc.Want.ErrorCode, tc.Want.Reason)
				if loc := r.Header.Get("Location"); loc != "" {
					t.Errorf("refusal carries Location %q", loc)
				}
				if h.Scope == scope {
					// The status lookup and a poll authenticate the same way.
					checkRefusal(t, h.lookup(t, tc.Cred, tc.RegistrationID), tc.Want.Status, tc.Want.ErrorCode, tc.Want.Reason)
					if tc.Polled() {
						checkRefusal(t, h.poll(t, tc.Cred, tc.RegistrationID, "5.0123456789abcdef.00000000-0000-4000-8000-000000000000"), tc.Want.Status, tc.Want.ErrorCode, tc.Want.Reason)
					}
				}
				provtest.Unchanged(t, before, provtest.TakeSnapshot(t, h.db))
				h.noRecord(t, tc.RegistrationID)
			})
		}
		if err := h.Journal.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		provtest.CheckJournal(t, h.Instance, table, "https", func(tc provtest.Refusal) []string {
			switch {
			case tc.Want.Terminal != "" || tc.IDScope(h.Scope) != h.Scope:
				return []string{provisioning.OpRegister}
			case !tc.Polled():
				return []string{provisioning.OpRegister, provisioning.OpLookup}
			}
			return []string{provisioning.OpRegister, provisioning.OpLookup, provisioning.OpPoll}
		}, h.logs.String())
	})
}

// checkDisabled checks the answers to a device whose enrollment is disabled:
// register 202 (with the terminal status, or "assigning" in strict mode), a
// poll 200 with it, one operation written and no registration record, and
// the status lookup 404.
func checkDisabled(t *testing.T, h *harness, tc provtest.Refusal, r *response, before provtest.Snapshot) {
	t.Helper()
	if r.Status != tc.Want.Status {
		t.Fatalf("register: %s, want %d", r, tc.Want.Status)
	}
	checkHeaders(t, r)
	first := r.operation(t)
	if h.Pipeline.Strict {
		if first.Status != dps.StatusAssigning || first.RegistrationState != nil {
			t.Errorf("strict register: status %q, registrationState %v; want assigning and none", first.Status, first.RegistrationState)
		}
	} else {
		tc.CheckTerminal(t, first)
	}
	p := h.poll(t, tc.Cred, tc.RegistrationID, first.OperationID).must(t, "poll")
	if p.Status != http.StatusOK {
		t.Fatalf("poll: %s, want 200", p)
	}
	tc.CheckTerminal(t, p.operation(t))
	provtest.OneOperation(t, before, provtest.TakeSnapshot(t, h.db))
	h.noRecord(t, tc.RegistrationID)
	checkRefusal(t, h.lookup(t, tc.Cred, tc.RegistrationID), http.StatusNotFound, dpserr.CodeRegistrationNotFound, "has no registration record")
}
