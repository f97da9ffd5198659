package provisioning_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// device is one enrolled device of a fresh harness, for the tests that
// register the same device several times. Each gets its own harness (and
// database), so that a registration stuck in the store fails one case only.
type device struct {
	h    *harness
	id   string
	cred provtest.Cred
	want want
}

func x509GroupDevice(t *testing.T, h *harness, id string) device {
	root := h.VerifiedRoot("re-root", pki.Options{CommonName: "Re Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "Re Intermediate"})
	h.PutGroup(provtest.SigningGroup("grp-re", inter.Cert))
	leaf, key := inter.Leaf(t, pki.Options{CommonName: id})
	return device{h, id, provtest.Cred{Cert: testutil.TLSCert(key, leaf, inter.Cert)},
		want{regID: id, deviceID: id, hub: hub1, mechanism: dps.AttestationX509, groupID: "grp-re", leaf: leaf, signer: inter.Cert}}
}

func symGroupDevice(t *testing.T, h *harness, id string) device {
	gpk, _ := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-re-sym")).Attestation)
	return device{h, id, provtest.Cred{SAS: h.DeviceToken(id, sas.DeriveDeviceKey(gpk, id))},
		want{regID: id, deviceID: id, hub: hub1, mechanism: dps.AttestationSymmetricKey, groupID: "grp-re-sym"}}
}

func symIndividualDevice(t *testing.T, h *harness, id string) device {
	e := provtest.SymIndividual(id)
	e.DeviceID = id + "-hub-identity"
	pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
	return device{h, id, provtest.Cred{SAS: h.DeviceToken(id, pk)},
		want{regID: id, deviceID: id + "-hub-identity", hub: hub1, mechanism: dps.AttestationSymmetricKey}}
}

// registerOnce enrolls a device made by mk on a fresh harness with one
// linked hub, registers it and checks the result.
func registerOnce(t *testing.T, strict bool, mk func(*testing.T, *harness, string) device, id string) (d device, first *dps.RegistrationOperationStatus, start time.Time) {
	t.Helper()
	h := newHarness(t, options{strict: strict})
	h.LinkHub(hub1, 1, true)
	d = mk(t, h, id)
	start = time.Now()
	first = h.provision(t, d.cred, d.id)
	checkResult(t, first.RegistrationState, d.want, start)
	return d, first, start
}

// TestReregistration registers a device twice: the record keeps
// createdDateTimeUtc, gets a new etag and a later lastUpdatedDateTimeUtc, and
// the substatus says reprovisionedToInitialAssignment (same hub). The first
// operation can still be polled and still says what it said.
func TestReregistration(t *testing.T) {
	kinds := map[string]func(*testing.T, *harness, string) device{
		"x509-group":               x509GroupDevice,
		"symmetric-key-group":      symGroupDevice,
		"symmetric-key-individual": symIndividualDevice,
	}
	for _, mode := range provtest.Modes {
		for kind, mk := range kinds {
			t.Run(mode.Name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				d, first, start := registerOnce(t, mode.Strict, mk, "re-dev-01")
				h := d.h

				second := h.provision(t, d.cred, d.id)
				if second.OperationID == first.OperationID {
					t.Errorf("re-registration reused operationId %s", first.OperationID)
				}
				w := d.want
				w.substatus = dps.SubstatusReprovisionedToInitialAssignment
				checkResult(t, second.RegistrationState, w, start)
				a, b := first.RegistrationState, second.RegistrationState
				if !b.CreatedDateTimeUtc.Equal(a.CreatedDateTimeUtc.Time) {
					t.Errorf("createdDateTimeUtc changed: %s → %s", a.CreatedDateTimeUtc.Format(), b.CreatedDateTimeUtc.Format())
				}
				if b.Etag == a.Etag {
					t.Errorf("etag unchanged by re-registration: %s", a.Etag)
				}
				if !b.LastUpdatedDateTimeUtc.After(a.LastUpdatedDateTimeUtc.Time) {
					t.Errorf("lastUpdatedDateTimeUtc did not move forward: %s → %s", a.LastUpdatedDateTimeUtc.Format(), b.LastUpdatedDateTimeUtc.Format())
				}
				h.checkLookup(t, d.cred, d.id, b)
				// The first operation is unchanged.
				p := h.poll(t, d.cred, d.id, first.OperationID).must(t, "poll of the first operation")
				if p.Status != http.StatusOK || testutil.JSON(t, p.operation(t)) != testutil.JSON(t, first) {
					t.Errorf("first operation now answers %s, want %s", p, testutil.JSON(t, first))
				}
			})
		}
	}
}

// TestDeleteRegistration deletes the record between two registrations: the
// next registration is initial again, with a new createdDateTimeUtc and a
// new etag; meanwhile the status lookup finds nothing and old operations can
// still be polled.
func TestDeleteRegistration(t *testing.T) {
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		d, first, start := registerOnce(t, mode.Strict, x509GroupDevice, "del-dev-01")
		h := d.h

		if err := h.Store.DeleteRegistration(context.Background(), d.id, ""); err != nil {
			t.Fatalf("DeleteRegistration: %v", err)
		}
		checkRefusal(t, h.lookup(t, d.cred, d.id), http.StatusNotFound, dpserr.CodeRegistrationNotFound, `registration "del-dev-01" has no registration record`)
		p := h.poll(t, d.cred, d.id, first.OperationID).must(t, "poll")
		if p.Status != http.StatusOK || p.operation(t).Status != dps.StatusAssigned {
			t.Errorf("poll of an operation of a deleted record: %s, want 200 assigned", p)
		}

		second := h.provision(t, d.cred, d.id)
		checkResult(t, second.RegistrationState, d.want, start) // initialAssignment again
		a, b := first.RegistrationState, second.RegistrationState
		if !b.CreatedDateTimeUtc.After(a.CreatedDateTimeUtc.Time) {
			t.Errorf("createdDateTimeUtc of the new record %s is not after the deleted one's %s", b.CreatedDateTimeUtc.Format(), a.CreatedDateTimeUtc.Format())
		}
		if b.Etag == a.Etag {
			t.Errorf("the new record has the deleted record's etag %s: a client holding the old etag would match the new record", a.Etag)
		}
		h.checkLookup(t, d.cred, d.id, b)
	})
}

// TestEtagsDifferBetweenRecords: every write of the store assigns a new
// etag; two records written one after the other do not share one.
func TestEtagsDifferBetweenRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	gpk, _ := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-etag")).Attestation)
	etags := map[string]string{}
	for _, id := range []string{"etag-dev-01", "etag-dev-02", "etag-dev-03"} {
		r := h.register(t, provtest.Cred{SAS: h.DeviceToken(id, sas.DeriveDeviceKey(gpk, id))}, id).must(t, "register")
		if r.Status != http.StatusAccepted {
			t.Fatalf("register %s: %s", id, r)
		}
		e := r.operation(t).RegistrationState.Etag
		if other, ok := etags[e]; ok {
			t.Errorf("%s and %s have the same etag %s", other, id, e)
		}
		etags[e] = id
	}
}

// TestReprovisioning changes the enrollment's hub between two registrations:
// the reprovision policy decides the hub and the substatus.
func TestReprovisioning(t *testing.T) {
	tests := map[string]struct {
		policy    *dps.ReprovisionPolicy
		hub       string
		substatus string
	}{
		"ok/default-policy-migrates":             {nil, hub2, dps.SubstatusDeviceDataMigrated},
		"ok/update-and-migrate":                  {&dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}, hub2, dps.SubstatusDeviceDataMigrated},
		"ok/update-and-reset":                    {&dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false}, hub2, dps.SubstatusDeviceDataReset},
		"ok/never-reprovision-keeps-the-old-hub": {&dps.ReprovisionPolicy{UpdateHubAssignment: false}, hub1, dps.SubstatusReprovisionedToInitialAssignment},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, options{})
			h.LinkHub(hub1, 1, true)
			h.LinkHub(hub2, 1, true)
			e := provtest.SymIndividual("reprov-dev")
			e.IotHubs = []string{hub1}
			e.ReprovisionPolicy = tc.policy
			stored := h.PutIndividual(e)
			pk, _ := provtest.Keys(t, stored.Attestation)
			c := provtest.Cred{SAS: h.DeviceToken("reprov-dev", pk)}
			w := want{regID: "reprov-dev", deviceID: "reprov-dev", hub: hub1, mechanism: dps.AttestationSymmetricKey}
			first := h.provision(t, c, "reprov-dev")
			checkResult(t, first.RegistrationState, w, time.Time{})

			stored.IotHubs = []string{hub2}
			h.PutIndividual(stored)
			second := h.provision(t, c, "reprov-dev")
			w.hub, w.substatus = tc.hub, tc.substatus
			checkResult(t, second.RegistrationState, w, time.Time{})
		})
	}
	// A device whose first registration failed is assigned initially once a
	// hub is linked.
	t.Run("ok/after-a-failed-registration-initial", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, options{})
		pk, _ := provtest.Keys(t, h.PutIndividual(provtest.SymIndividual("late-hub-dev")).Attestation)
		c := provtest.Cred{SAS: h.DeviceToken("late-hub-dev", pk)}
		first := h.provision(t, c, "late-hub-dev")
		checkResult(t, first.RegistrationState, want{regID: "late-hub-dev", status: dps.StatusFailed, errorCode: dpserr.CodeHubNotFound, errorText: "IoTHub not found.", mechanism: dps.AttestationSymmetricKey}, time.Time{})
		h.LinkHub(hub1, 1, true)
		second := h.provision(t, c, "late-hub-dev")
		checkResult(t, second.RegistrationState, want{regID: "late-hub-dev", deviceID: "late-hub-dev", hub: hub1, mechanism: dps.AttestationSymmetricKey}, time.Time{})
	})
}

// TestOperationTTL: "OperationTTL is how long an operation can be polled",
// and the 404 says so; an operation older than that is not found, whether or
// not the purge (every few minutes in the server) has run yet.
func TestOperationTTL(t *testing.T) {
	t.Parallel()
	const ttl = 300 * time.Millisecond
	h := newHarness(t, options{ttl: ttl})
	h.LinkHub(hub1, 1, true)
	d := symGroupDevice(t, h, "ttl-dev")
	r := h.register(t, d.cred, d.id).must(t, "register")
	if r.Status != http.StatusAccepted {
		t.Fatalf("register: %s", r)
	}
	op := r.operation(t)
	if p := h.poll(t, d.cred, d.id, op.OperationID).must(t, "poll"); p.Status != http.StatusOK {
		t.Fatalf("poll within the TTL: %s", p)
	}
	time.Sleep(2 * ttl)
	checkRefusal(t, h.poll(t, d.cred, d.id, op.OperationID), http.StatusNotFound, dpserr.CodeOperationNotFound, "operations can be polled for 300ms after the register request")
}

// TestReregistrationInAnotherCase: registration IDs are case-insensitive, so
// "case-dev" and "CASE-DEV" are one registration record, which keeps its
// first spelling. The device identity it names in the hub (deviceId; IoT Hub
// device IDs are case-sensitive) must not change with the spelling of a later
// request either, or the re-registration "to the same hub" makes a second
// device there.
func TestReregistrationInAnotherCase(t *testing.T) {
	t.Parallel()
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	root := h.VerifiedRoot("case-root", pki.Options{CommonName: "Case Root"})
	h.PutGroup(provtest.CAGroup("grp-case", "case-root"))
	leaf, key := root.Leaf(t, pki.Options{CommonName: "Case-Dev"})
	c := provtest.Cred{Cert: testutil.TLSCert(key, leaf, root.Cert)}
	first := h.provision(t, c, "case-dev")
	checkResult(t, first.RegistrationState, want{regID: "case-dev", deviceID: "case-dev", hub: hub1, mechanism: dps.AttestationX509, groupID: "grp-case"}, time.Time{})
	second := h.provision(t, c, "CASE-DEV")
	rs := second.RegistrationState
	if rs.RegistrationID != "case-dev" {
		t.Errorf("registrationId = %q, want the record's first spelling case-dev", rs.RegistrationID)
	}
	if rs.Substatus != dps.SubstatusReprovisionedToInitialAssignment {
		t.Errorf("substatus = %q", rs.Substatus)
	}
	if rs.DeviceID != first.RegistrationState.DeviceID {
		t.Errorf("deviceId changed from %q to %q on a re-registration of the same record (registrationId %q) to the same hub",
			first.RegistrationState.DeviceID, rs.DeviceID, rs.RegistrationID)
	}
}
