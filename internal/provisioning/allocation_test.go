package provisioning_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestHashedDistribution registers 2,000 group-derived symmetric-key devices
// through the pipeline over two linked hubs weighted 1:3. The shares must be
// 25 % and 75 % within 3.5 points (the binomial standard deviation is about
// 1 point), each device must land where allocation.Hashed puts it, and the
// choice must not depend on the instance (a second database) nor change on
// re-registration.
func TestHashedDistribution(t *testing.T) {
	t.Parallel()
	const n = 2000
	const tolerance = 0.035
	h := newHarness(t, options{})
	h.LinkHub(hub1, 1, true)
	h.LinkHub(hub2, 3, true)
	gpk, _ := provtest.Keys(t, h.PutGroup(provtest.SymGroup("grp-fleet")).Attestation)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("fleet-%04d", i)
	}
	register := func(h *harness, id string) (*dps.RegistrationOperationStatus, error) {
		ans, err := h.pipelineRegister(t, provisioning.Request{
			Transport: "https", IDScope: h.Scope, RegistrationID: id,
			Body:        &dps.DeviceRegistration{RegistrationID: id},
			Credentials: attest.Credentials{SAS: h.DeviceToken(id, sas.DeriveDeviceKey(gpk, id))},
		})
		if err != nil {
			return nil, err
		}
		if ans.Status != http.StatusAccepted {
			return nil, fmt.Errorf("answer status %d", ans.Status)
		}
		return ans.Body, nil
	}

	start := time.Now()
	hubOf := make([]string, n)
	errs := make(chan error, n)
	testutil.Spread(n, 8, func(i int) {
		op, err := register(h, ids[i])
		if err != nil {
			errs <- fmt.Errorf("%s: %v", ids[i], err)
			return
		}
		if op.Status != dps.StatusAssigned || op.RegistrationState.Substatus != dps.SubstatusInitialAssignment {
			errs <- fmt.Errorf("%s: %s", ids[i], testutil.JSON(t, op))
			return
		}
		hubOf[i] = op.RegistrationState.AssignedHub
	})
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d registrations in %s", n, time.Since(start).Round(time.Millisecond))

	count := map[string]int{}
	cands := []allocation.Hub{{Name: hub1, Weight: 1}, {Name: hub2, Weight: 3}}
	for i, hub := range hubOf {
		count[hub]++
		if want := allocation.Hashed(cands, ids[i]); hub != want {
			t.Errorf("%s assigned to %s, allocation.Hashed says %s", ids[i], hub, want)
		}
	}
	if len(count) != 2 {
		t.Fatalf("hubs used: %v, want exactly %s and %s", count, hub1, hub2)
	}
	for hub, want := range map[string]float64{hub1: 0.25, hub2: 0.75} {
		got := float64(count[hub]) / n
		t.Logf("%s: %d devices (%.1f %%, want %.0f %% ± %.1f)", hub, count[hub], 100*got, 100*want, 100*tolerance)
		if math.Abs(got-want) > tolerance {
			t.Errorf("%s got %.1f %% of the devices, want %.0f %% ± %.1f", hub, 100*got, 100*want, 100*tolerance)
		}
	}

	t.Run("same-choice-on-another-instance", func(t *testing.T) {
		h2 := newHarness(t, options{})
		h2.LinkHub(hub2, 3, true) // linked in the other order
		h2.LinkHub(hub1, 1, true)
		g := provtest.SymGroup("grp-fleet")
		g.Attestation.SymmetricKey = &dps.SymmetricKeyAttestation{PrimaryKey: encodeB64(gpk)}
		h2.PutGroup(g)
		for i := 0; i < n; i += 10 {
			op, err := register(h2, ids[i])
			if err != nil {
				t.Fatal(err)
			}
			if op.RegistrationState.AssignedHub != hubOf[i] {
				t.Errorf("%s: %s here, %s on the first instance", ids[i], op.RegistrationState.AssignedHub, hubOf[i])
			}
		}
	})
	t.Run("same-hub-on-re-registration", func(t *testing.T) {
		for i := 0; i < n; i += 20 {
			op, err := register(h, ids[i])
			if err != nil {
				t.Fatal(err)
			}
			rs := op.RegistrationState
			if rs.AssignedHub != hubOf[i] || rs.Substatus != dps.SubstatusReprovisionedToInitialAssignment {
				t.Errorf("%s re-registered to %s (%s), first to %s", ids[i], rs.AssignedHub, rs.Substatus, hubOf[i])
			}
		}
	})
}

// allocationCase is one enrollment's hub selection and the outcome.
type allocationCase struct {
	enroll    func(*dps.IndividualEnrollment)
	hub       string // assigned to
	errorCode int    // or failed with
	errorText string
}

// TestAllocationPolicies runs hub selection through the HTTPS device API in
// both modes, on an instance with hub-1 and hub-2 linked (both applying the
// allocation policy) and hub-3 linked without applying it.
func TestAllocationPolicies(t *testing.T) {
	const hub3 = "hub-3.azure-devices.net"
	const unlinked = "unlinked.azure-devices.net"
	tests := map[string]allocationCase{
		"ok/static-one-hub": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy, e.IotHubs = "static", []string{hub2}
		}, hub: hub2},
		"ok/static-legacy-iotHubHostName": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy, e.IotHubHostName = "static", hub2
		}, hub: hub2},
		"ok/static-hub-case-insensitive": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy, e.IotHubs = "static", []string{"HUB-2.azure-devices.net"}
		}, hub: hub2},
		"ok/enrollment-hub-not-applying-the-policy": {enroll: func(e *dps.IndividualEnrollment) {
			e.IotHubs = []string{hub3}
		}, hub: hub3},
		"ok/unlinked-enrollment-hub-skipped": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy, e.IotHubs = "hashed", []string{unlinked, hub1}
		}, hub: hub1},
		"ok/hashed-over-enrollment-hubs": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy, e.IotHubs = "hashed", []string{hub1, hub2}
		}, hub: allocation.Hashed([]allocation.Hub{{Name: hub1, Weight: 1}, {Name: hub2, Weight: 1}}, "alloc-dev")},
		"ok/default-policy-over-linked-hubs": {enroll: func(e *dps.IndividualEnrollment) {},
			hub: allocation.Hashed([]allocation.Hub{{Name: hub1, Weight: 1}, {Name: hub2, Weight: 1}}, "alloc-dev")},
		"fail/enrollment-hub-not-linked": {enroll: func(e *dps.IndividualEnrollment) {
			e.IotHubs = []string{unlinked}
		}, errorCode: dpserr.CodeHubNotFound, errorText: "IoTHub not found. The enrollment selects " + unlinked + ", which is not linked"},
		"fail/static-hub-not-linked": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy, e.IotHubHostName = "static", unlinked
		}, errorCode: dpserr.CodeHubNotFound, errorText: "IoTHub not found."},
		// Without a location or a measured round trip, geoLatency hashes.
		"ok/geoLatency-without-data-is-hashed": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy = "geoLatency"
		}, hub: allocation.Hashed([]allocation.Hub{{Name: hub1, Weight: 1}, {Name: hub2, Weight: 1}}, "alloc-dev")},
		"fail/static-without-hubs-several-applying-the-policy": {enroll: func(e *dps.IndividualEnrollment) {
			e.AllocationPolicy = "static"
		}, errorCode: dpserr.CodeNoHub, errorText: "static allocation needs exactly one IoT hub: the one the enrollment's iotHubs name, or else the instance's only linked hub; 2 are candidates (" + hub1 + ", " + hub2 + ")"},
	}
	provtest.EachMode(t, func(t *testing.T, mode provtest.Mode) {
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, options{strict: mode.Strict})
				h.LinkHub(hub1, 1, true)
				h.LinkHub(hub2, 1, true)
				h.LinkHub(hub3, 1, false)
				e := provtest.SymIndividual("alloc-dev")
				tc.enroll(e)
				pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
				runAllocation(t, h, provtest.Cred{SAS: h.DeviceToken("alloc-dev", pk)}, "alloc-dev", tc)
			})
		}
	})
}

// TestAllocationFailures covers instance-wide configurations: no hub linked,
// no linked hub applying the policy, static as the instance default with two
// linked hubs.
func TestAllocationFailures(t *testing.T) {
	static := func(g *dps.EnrollmentGroup) { g.AllocationPolicy = dps.AllocationStatic }
	tests := map[string]struct {
		setup func(*harness)
		group func(*dps.EnrollmentGroup) // nil: the group as provtest makes it
		allocationCase
	}{
		"fail/no-linked-hub": {setup: func(h *harness) {},
			allocationCase: allocationCase{errorCode: dpserr.CodeHubNotFound, errorText: "IoTHub not found. No IoT hub is linked to this instance"}},
		"fail/no-linked-hub-applies-the-policy": {setup: func(h *harness) { h.LinkHub(hub1, 1, false) },
			allocationCase: allocationCase{errorCode: dpserr.CodeHubNotFound, errorText: "IoTHub not found. No linked IoT hub applies the allocation policy"}},
		"fail/static-instance-default-two-hubs": {setup: func(h *harness) {
			h.LinkHub(hub1, 1, true)
			h.LinkHub(hub2, 1, true)
			h.setInstancePolicy("static")
		}, allocationCase: allocationCase{errorCode: dpserr.CodeNoHub, errorText: "static allocation needs exactly one IoT hub"}},
		"ok/static-instance-default-one-hub": {setup: func(h *harness) {
			h.LinkHub(hub1, 1, true)
			h.LinkHub(hub2, 1, false)
			h.setInstancePolicy("static")
		}, allocationCase: allocationCase{hub: hub1}},
		// A group "static" with no hubs, as Azure's Python SDK test creates
		// it, assigns its devices to the instance's only linked hub.
		"ok/static-group-without-hubs-only-linked-hub": {setup: func(h *harness) { h.LinkHub(hub1, 1, true) }, group: static,
			allocationCase: allocationCase{hub: hub1}},
		"fail/static-group-without-hubs-no-linked-hub": {setup: func(h *harness) {}, group: static,
			allocationCase: allocationCase{errorCode: dpserr.CodeHubNotFound, errorText: "IoTHub not found. No IoT hub is linked to this instance"}},
	}
	for _, mode := range provtest.Modes {
		for name, tc := range tests {
			t.Run(mode.Name+"/"+name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, options{strict: mode.Strict})
				tc.setup(h)
				g := provtest.SymGroup("grp-alloc")
				if tc.group != nil {
					tc.group(g)
				}
				gpk, _ := provtest.Keys(t, h.PutGroup(g).Attestation)
				id := "alloc-grp-dev"
				tc.enroll = func(*dps.IndividualEnrollment) {}
				runAllocation(t, h, provtest.Cred{SAS: h.DeviceToken(id, sas.DeriveDeviceKey(gpk, id))}, id, tc.allocationCase)
			})
		}
	}
}

func (h *harness) setInstancePolicy(p string) {
	h.T.Helper()
	ctx := context.Background()
	inst, err := h.Store.Instance(ctx)
	if err != nil {
		h.T.Fatal(err)
	}
	inst.AllocationPolicy = p
	if err := h.Store.UpdateInstance(ctx, inst); err != nil {
		h.T.Fatal(err)
	}
}

// runAllocation provisions the device and checks the outcome: assigned to
// tc.hub, or failed (a terminal status, HTTP 202 then 200, with a
// registration record that says why).
func runAllocation(t *testing.T, h *harness, c provtest.Cred, id string, tc allocationCase) {
	t.Helper()
	op := h.provision(t, c, id)
	rs := op.RegistrationState
	if tc.errorCode == 0 {
		if op.Status != dps.StatusAssigned || rs.AssignedHub != tc.hub {
			t.Fatalf("status %s, hub %q (errorMessage %q); want assigned to %s", op.Status, rs.AssignedHub, rs.ErrorMessage, tc.hub)
		}
	} else {
		if op.Status != dps.StatusFailed {
			t.Fatalf("status %s (hub %q), want failed", op.Status, rs.AssignedHub)
		}
		checkResult(t, rs, want{regID: id, status: dps.StatusFailed, errorCode: tc.errorCode, errorText: tc.errorText}, time.Time{})
		if rs.Substatus != "" {
			t.Errorf("failed with substatus %q", rs.Substatus)
		}
		if rs.ErrorCode/1000 != 400 && rs.ErrorCode/1000 != 401 {
			t.Errorf("errorCode %d is not a 400xxx/401xxx DPS code", rs.ErrorCode)
		}
	}
	h.checkLookup(t, c, id, rs)
}
