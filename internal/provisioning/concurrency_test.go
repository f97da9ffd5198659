package provisioning_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestConcurrentRegistrationsOfOneDevice starts 20 registrations of one
// device at once over HTTPS. Each must succeed (202 assigned) or fail cleanly
// (409 409203 "Precondition failed."); afterwards there is exactly one
// record, assigned, whose etag is one of the successful answers'; the
// successful answers agree on createdDateTimeUtc, exactly one of them is the
// initial assignment, their etags differ, and each of their operations can
// be polled and says what the answer said.
func TestConcurrentRegistrationsOfOneDevice(t *testing.T) {
	kinds := map[string]func(*testing.T, *harness, string) device{
		"symmetric-key-group": symGroupDevice,
		"x509-group":          x509GroupDevice,
	}
	for kind, mk := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			const n = 20
			h := newHarness(t, options{})
			h.LinkHub(hub1, 1, true)
			h.LinkHub(hub2, 1, true)
			d := mk(t, h, "race-dev-01")
			d.want.hub = "" // hashed over two hubs
			answers := make([]*response, n)
			var ready, done sync.WaitGroup
			gate := make(chan struct{})
			for i := 0; i < n; i++ {
				ready.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					// Each goroutine has its own connection, opened before
					// the gate, so the requests really arrive together.
					c := d.cred
					if c.Cert != nil {
						cc := *c.Cert
						c.Cert = &cc
					}
					h.register(t, provtest.Cred{SAS: c.SAS, Cert: c.Cert}, "warm-up-not-enrolled") // opens the connection; refused
					ready.Done()
					<-gate
					answers[i] = h.register(t, c, d.id)
				}()
			}
			ready.Wait()
			close(gate)
			done.Wait()

			var ok []*dps.RegistrationOperationStatus
			conflicts := 0
			for i, r := range answers {
				switch {
				case r.Err != nil:
					t.Errorf("request %d: %v", i, r.Err)
				case r.Status == http.StatusAccepted:
					op := r.operation(t)
					if op.Status != dps.StatusAssigned {
						t.Errorf("request %d: status %s: %s", i, op.Status, r.Body)
						continue
					}
					ok = append(ok, op)
				case r.Status == http.StatusConflict:
					checkRefusal(t, r, http.StatusConflict, dpserr.CodeConcurrentRegistration, "Precondition failed.")
					conflicts++
				default:
					t.Errorf("request %d: %s, want 202 or 409", i, r)
				}
			}
			t.Logf("%d assigned, %d conflicts", len(ok), conflicts)
			if len(ok) == 0 {
				t.Fatal("no registration succeeded")
			}
			rec, err := h.Store.Registration(context.Background(), d.id)
			if err != nil {
				t.Fatalf("no record after the race: %v", err)
			}
			if rec.Result.Status != dps.StatusAssigned {
				t.Errorf("record status %s", rec.Result.Status)
			}
			initial := 0
			etags := map[string]bool{}
			for _, op := range ok {
				rs := op.RegistrationState
				if rs.Substatus == dps.SubstatusInitialAssignment {
					initial++
				}
				if etags[rs.Etag] {
					t.Errorf("two successful answers share the etag %s", rs.Etag)
				}
				etags[rs.Etag] = true
				if !rs.CreatedDateTimeUtc.Equal(rec.Result.CreatedDateTimeUtc.Time) {
					t.Errorf("answer created %s, record created %s", rs.CreatedDateTimeUtc.Format(), rec.Result.CreatedDateTimeUtc.Format())
				}
				if rs.AssignedHub != rec.Result.AssignedHub {
					t.Errorf("answer hub %s, record hub %s", rs.AssignedHub, rec.Result.AssignedHub)
				}
				p := h.poll(t, d.cred, d.id, op.OperationID).must(t, "poll")
				if p.Status != http.StatusOK || testutil.JSON(t, p.operation(t)) != testutil.JSON(t, op) {
					t.Errorf("poll of %s: %s, want %s", op.OperationID, p, testutil.JSON(t, op))
				}
			}
			if initial != 1 {
				t.Errorf("%d successful answers say initialAssignment, want exactly 1", initial)
			}
			if !etags[rec.Result.Etag] {
				t.Errorf("the record's etag %s is none of the successful answers'", rec.Result.Etag)
			}
			snap := provtest.TakeSnapshot(t, h.db)
			records := 0
			for _, r := range snap.Registrations {
				if strings.HasPrefix(r, "race-dev-01 ") {
					records++
				}
			}
			if records != 1 {
				t.Errorf("%d records for the device, want 1: %v", records, snap.Registrations)
			}
		})
	}
}

// TestConcurrentRegistrationsOfManyDevices registers 50 devices of one group
// at once: all assigned, 50 records.
func TestConcurrentRegistrationsOfManyDevices(t *testing.T) {
	t.Parallel()
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	root := h.VerifiedRoot("many-root", pki.Options{CommonName: "Many Root"})
	h.PutGroup(provtest.CAGroup("grp-many", "many-root"))
	gpk, _ := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-many-sym")).Attestation)
	errs := make(chan error, 50)
	testutil.Together(50, func(i int) {
		id := fmt.Sprintf("many-%02d", i)
		c := provtest.Cred{SAS: h.DeviceToken(id, sas.DeriveDeviceKey(gpk, id))}
		if i%2 == 0 {
			leaf, key, err := pki.NewLeaf(pki.Options{CommonName: id}, root.Cert, root.Key)
			if err != nil {
				errs <- err
				return
			}
			c = provtest.Cred{Cert: testutil.TLSCert(key, leaf, root.Cert)}
		}
		r := h.register(t, c, id)
		if r.Err != nil || r.Status != http.StatusAccepted {
			errs <- fmt.Errorf("%s: %s", id, r)
			return
		}
		if op := r.operation(t); op.Status != dps.StatusAssigned {
			errs <- fmt.Errorf("%s: %s", id, r.Body)
		}
	})
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(provtest.TakeSnapshot(t, h.db).Registrations); got != 50 {
		t.Errorf("%d records, want 50", got)
	}
}
