package provisioning_test

// Assignment that reaches the hub: the pipeline against local HTTPS
// implementations of the IoT Hub registry API (hubtest.IoTHub, which
// checks service tokens, etags and bodies as the hub does), asserting the
// exact requests each hub received.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// hubHarness is a harness whose pipeline trusts the doubles' CA.
func hubHarness(t *testing.T, o options) (*harness, *hubtest.CA) {
	t.Helper()
	ca := hubtest.NewCA(t)
	o.ca = ca
	return newHarness(t, o), ca
}

// twoHubs is a harness with two IoT hub doubles, A and B, linked with the
// azure-iothub registry.
func twoHubs(t *testing.T, o options) (h *harness, ca *hubtest.CA, a, b *hubtest.IoTHub) {
	t.Helper()
	h, ca = hubHarness(t, o)
	a = hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
	b = hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
	h.linkIoTHub(a)
	h.linkIoTHub(b)
	return h, ca, a, b
}

// linkIoTHub links a hub double with the azure-iothub device registry.
func (h *harness) linkIoTHub(d *hubtest.IoTHub) {
	h.T.Helper()
	_, err := h.Store.PutLinkedHub(context.Background(), &store.LinkedHub{Name: d.HostName, ConnectionString: d.ConnectionString(),
		AllocationWeight: 1, ApplyAllocationPolicy: true, DeviceRegistry: string(hub.KindAzureIoTHub)}, "*")
	if err != nil {
		h.T.Fatal(err)
	}
}

// settle registers the device and polls its operation, without waiting
// for Retry-After, until it ends.
func (h *harness) settle(t testing.TB, c provtest.Cred, id string) *dps.RegistrationOperationStatus {
	t.Helper()
	r := h.register(t, c, id).must(t, "register")
	if r.Status != http.StatusAccepted {
		t.Fatalf("register: %s, want 202", r)
	}
	return h.pollUntilDone(t, c, id, r.operation(t))
}

func (h *harness) pollUntilDone(t testing.TB, c provtest.Cred, id string, op *dps.RegistrationOperationStatus) *dps.RegistrationOperationStatus {
	t.Helper()
	deadline := time.Now().Add(requestTimeout)
	for op.Status == dps.StatusAssigning {
		if time.Now().After(deadline) {
			t.Fatalf("operation %s of %s still assigning after %s", op.OperationID, id, requestTimeout)
		}
		time.Sleep(20 * time.Millisecond)
		p := h.poll(t, c, id, op.OperationID).must(t, "poll")
		if p.Status != http.StatusOK && p.Status != http.StatusAccepted {
			t.Fatalf("poll: %s", p)
		}
		op = p.operation(t)
	}
	return op
}

// calls lists what a double received: "METHOD /path" and the If-Match
// header when there is one, and the answer's status.
func calls(s *hubtest.Server) []string {
	var out []string
	for _, c := range s.Calls() {
		line := c.Method + " " + c.Path
		if m := c.Header.Get("If-Match"); m != "" {
			line += " If-Match:" + m
		}
		out = append(out, fmt.Sprintf("%s → %d", line, c.Status))
	}
	return out
}

func wantCalls(t testing.TB, what string, s *hubtest.Server, want ...string) {
	t.Helper()
	if got := calls(s); !slices.Equal(got, want) {
		t.Errorf("%s received:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// callBody decodes the body of the call at index i.
func callBody(t testing.TB, s *hubtest.Server, i int) map[string]any {
	t.Helper()
	cs := s.Calls()
	if i >= len(cs) {
		t.Fatalf("no call %d (%d calls)", i, len(cs))
	}
	var m map[string]any
	if err := json.Unmarshal(cs[i].Body, &m); err != nil {
		t.Fatalf("call %d body %q: %v", i, cs[i].Body, err)
	}
	return m
}

// sameJSON fails unless a and b encode alike, whatever their member order.
func sameJSON(t testing.TB, what string, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: want %q is not JSON", what, want)
	}
	g, _ := json.Marshal(got)
	var gv any
	json.Unmarshal(g, &gv)
	if a, b := testutil.JSON(t, gv), testutil.JSON(t, w); a != b {
		t.Errorf("%s = %s, want %s", what, a, b)
	}
}

func b64(b []byte) string { return encodeB64(b) }

// TestHubDeviceIdentities: each kind of device is created in its hub with
// the identity it proved to dpsd (sas with its keys, selfSigned with its
// enrollment's thumbprints, certificateAuthority for a group), its
// capabilities, its device ID, and the initial twin; the record shows the
// twin applied.
func TestHubDeviceIdentities(t *testing.T) {
	t.Parallel()
	h, ca := hubHarness(t, options{})
	iot := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
	h.linkIoTHub(iot)

	twin := &dps.InitialTwin{Tags: json.RawMessage(`{"site":"north","line":3}`), Properties: &dps.InitialTwinProperties{Desired: json.RawMessage(`{"interval":30,"modes":[{"a":1}]}`)}}
	ind := provtest.SymIndividual("sym-ind")
	ind.DeviceID, ind.Capabilities, ind.InitialTwin = "Sym_Device-1", &dps.DeviceCapabilities{IotEdge: true}, twin
	ind = h.PutIndividual(ind)
	grp := h.PutGroup(provtest.SymGroup("sym-grp"))
	gpk, gsk := provtest.Keys(t, grp.Attestation)
	selfA, keyA := testutil.SelfSigned(t, pki.Options{CommonName: "x509-self"})
	selfB, _ := testutil.SelfSigned(t, pki.Options{CommonName: "x509-self"})
	h.PutIndividual(provtest.X509Individual("x509-self", selfA, selfB))
	root := h.VerifiedRoot("root", pki.Options{CommonName: "Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "Intermediate"})
	g := provtest.SigningGroup("x509-grp", inter.Cert)
	g.InitialTwin = &dps.InitialTwin{Tags: json.RawMessage(`{"fleet":"x509"}`)}
	h.PutGroup(g)
	leaf, leafKey := inter.Leaf(t, pki.Options{CommonName: "x509-grp-dev"})
	ipk, isk := provtest.Keys(t, ind.Attestation)

	tests := []struct {
		name, id, deviceID string
		cred               provtest.Cred
		device             string // the PUT /devices body
		twin               string // the PATCH /twins body; "" for none
	}{
		{name: "symmetric key individual", id: "sym-ind", deviceID: "Sym_Device-1", cred: provtest.Cred{SAS: h.DeviceToken("sym-ind", ipk)},
			device: `{"deviceId":"Sym_Device-1","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + b64(ipk) + `","secondaryKey":"` + b64(isk) + `"}},"capabilities":{"iotEdge":true}}`,
			twin:   `{"tags":{"site":"north","line":3},"properties":{"desired":{"interval":30,"modes":[{"a":1}]}}}`},
		{name: "symmetric key group device", id: "Sym-Grp-Dev", deviceID: "Sym-Grp-Dev", cred: provtest.Cred{SAS: h.DeviceToken("Sym-Grp-Dev", sas.DeriveDeviceKey(gpk, "Sym-Grp-Dev"))},
			device: `{"deviceId":"Sym-Grp-Dev","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + b64(sas.DeriveDeviceKey(gpk, "Sym-Grp-Dev")) + `","secondaryKey":"` + b64(sas.DeriveDeviceKey(gsk, "Sym-Grp-Dev")) + `"}},"capabilities":{"iotEdge":false}}`},
		{name: "x509 self-signed individual", id: "x509-self", deviceID: "x509-self", cred: provtest.Cred{Cert: testutil.TLSCert(keyA, selfA)},
			device: `{"deviceId":"x509-self","status":"enabled","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"` + pki.SHA256Thumbprint(selfA) + `","secondaryThumbprint":"` + pki.SHA256Thumbprint(selfB) + `"}},"capabilities":{"iotEdge":false}}`},
		{name: "x509 group device", id: "x509-grp-dev", deviceID: "x509-grp-dev", cred: provtest.Cred{Cert: testutil.TLSCert(leafKey, leaf, inter.Cert)},
			device: `{"deviceId":"x509-grp-dev","status":"enabled","authentication":{"type":"certificateAuthority"},"capabilities":{"iotEdge":false}}`,
			twin:   `{"tags":{"fleet":"x509"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			iot.ResetCalls()
			op := h.settle(t, tc.cred, tc.id)
			checkResult(t, op.RegistrationState, want{regID: tc.id, deviceID: tc.deviceID, hub: iot.HostName}, time.Time{})
			want := []string{"PUT /devices/" + tc.deviceID + " → 200"}
			if tc.twin != "" {
				want = append(want, "PATCH /twins/"+tc.deviceID+" If-Match:* → 200")
			}
			wantCalls(t, "the hub", iot.Server, want...)
			sameJSON(t, "PUT /devices body", callBody(t, iot.Server, 0), tc.device)
			rec, err := h.Store.Registration(context.Background(), tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if tc.twin != "" {
				sameJSON(t, "PATCH /twins body", callBody(t, iot.Server, 1), tc.twin)
				sameJSON(t, "the record's applied twin", rec.AppliedTwin, tc.twin)
			} else if rec.AppliedTwin != nil {
				t.Errorf("applied twin %s, want none", testutil.JSON(t, rec.AppliedTwin))
			}
			if rec.Placement != (store.Placement{Hub: iot.HostName, DeviceID: tc.deviceID}) {
				t.Errorf("placement %+v, want %s on %s", rec.Placement, tc.deviceID, iot.HostName)
			}
			if _, ok := iot.Device(tc.deviceID); !ok {
				t.Errorf("the hub has no device %s", tc.deviceID)
			}
			// The job logs (and counts) the registration once.
			n := 0
			for _, line := range strings.Split(h.logs.String(), "\n") {
				if strings.Contains(line, "msg=registration ") && strings.Contains(line, "registrationId="+tc.id+" ") {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d registration log lines for %s, want 1", n, tc.id)
			}
		})
	}
}

// TestHubReprovisioning moves a device between two hubs under every
// re-provisioning policy and checks what each hub received: the device
// starts on hub A with the enrollment's twin, an operator changes that twin
// in hub A, and the enrollment then names hub B.
func TestHubReprovisioning(t *testing.T) {
	t.Parallel()
	h, _, a, b := twoHubs(t, options{})
	const initialTwin = `{"tags":{"fleet":"f1"},"properties":{"desired":{"interval":30}}}`
	const changedTags, changedDesired = `{"fleet":"f1","room":"12"}`, `{"interval":60}`

	tests := []struct {
		name       string
		policy     *dps.ReprovisionPolicy
		apiVersion string // of the second registration
		hubs       []string
		substatus  string
		hub        *hubtest.IoTHub
		callsA     []string
		callsB     []string
		applied    string // the record's applied twin
	}{
		{name: "default policy migrates", hubs: []string{b.HostName}, substatus: dps.SubstatusDeviceDataMigrated, hub: b,
			callsA:  []string{"GET /twins/%s → 200", "DELETE /devices/%s If-Match:* → 204"},
			callsB:  []string{"PUT /devices/%s → 200", "PUT /twins/%s If-Match:* → 200"},
			applied: `{"tags":` + changedTags + `,"properties":{"desired":` + changedDesired + `}}`},
		{name: "reset", policy: &dps.ReprovisionPolicy{UpdateHubAssignment: true}, hubs: []string{b.HostName}, substatus: dps.SubstatusDeviceDataReset, hub: b,
			callsA:  []string{"DELETE /devices/%s If-Match:* → 204"},
			callsB:  []string{"PUT /devices/%s → 200", "PUT /twins/%s If-Match:* → 200"},
			applied: initialTwin},
		{name: "never re-provision", policy: &dps.ReprovisionPolicy{MigrateDeviceData: true}, hubs: []string{b.HostName},
			substatus: dps.SubstatusReprovisionedToInitialAssignment, hub: a,
			callsA:  []string{"PUT /devices/%s → 409", "PUT /devices/%s If-Match:* → 200"},
			applied: initialTwin},
		{name: "same hub", hubs: []string{a.HostName}, substatus: dps.SubstatusReprovisionedToInitialAssignment, hub: a,
			callsA:  []string{"PUT /devices/%s → 409", "PUT /devices/%s If-Match:* → 200"},
			applied: initialTwin},
		{name: "legacy api-version without a policy stays", apiVersion: "2018-04-01", hubs: []string{b.HostName},
			substatus: dps.SubstatusReprovisionedToInitialAssignment, hub: a,
			callsA:  []string{"PUT /devices/%s → 409", "PUT /devices/%s If-Match:* → 200"},
			applied: initialTwin},
		{name: "legacy api-version with a policy follows it", policy: &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false},
			apiVersion: "2017-11-15", hubs: []string{b.HostName}, substatus: dps.SubstatusDeviceDataReset, hub: b,
			callsA:  []string{"DELETE /devices/%s If-Match:* → 204"},
			callsB:  []string{"PUT /devices/%s → 200", "PUT /twins/%s If-Match:* → 200"},
			applied: initialTwin},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("reprov-%d", i)
			e := provtest.SymIndividual(id)
			e.IotHubs = []string{a.HostName}
			e.InitialTwin = &dps.InitialTwin{}
			json.Unmarshal([]byte(initialTwin), e.InitialTwin)
			e.ReprovisionPolicy = tc.policy
			pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
			cred := provtest.Cred{SAS: h.DeviceToken(id, pk)}
			first := h.settle(t, cred, id)
			checkResult(t, first.RegistrationState, want{regID: id, deviceID: id, hub: a.HostName}, time.Time{})
			// The twin changes in hub A (a back end's tag, a new desired value).
			a.PutDevice(id, mustDevice(t, a, id).Auth, changedTags, changedDesired)
			e.IotHubs = tc.hubs
			h.PutIndividual(e)
			a.ResetCalls()
			b.ResetCalls()

			body, _ := json.Marshal(map[string]string{"registrationId": id})
			r := h.do(t, cred, http.MethodPut, regPath(h.Scope, id)+"/register?api-version="+cmpOr(tc.apiVersion, apiVersion), nil, body).must(t, "register")
			op := h.pollUntilDone(t, cred, id, r.operation(t))
			checkResult(t, op.RegistrationState, want{regID: id, deviceID: id, hub: tc.hub.HostName, substatus: tc.substatus}, time.Time{})
			wantCalls(t, "hub A", a.Server, fmtCalls(tc.callsA, id)...)
			wantCalls(t, "hub B", b.Server, fmtCalls(tc.callsB, id)...)
			_, onA := a.Device(id)
			_, onB := b.Device(id)
			if onA != (tc.hub == a) || onB != (tc.hub == b) {
				t.Errorf("device on hub A: %v, on hub B: %v; want it on %s only", onA, onB, tc.hub.HostName)
			}
			d := mustDevice(t, tc.hub, id)
			rec, err := h.Store.Registration(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "the record's applied twin", rec.AppliedTwin, tc.applied)
			if tc.hub == b {
				sameJSON(t, "the twin in hub B", map[string]any{"tags": d.Tags, "properties": map[string]any{"desired": d.Desired}}, tc.applied)
				if ks := d.Auth.SymmetricKey; ks == nil || ks.PrimaryKey != b64(pk) {
					t.Errorf("hub B identity %+v, want the device's keys", d.Auth)
				}
			}
		})
	}

	t.Run("record deleted: an initial assignment that leaves the old hub alone", func(t *testing.T) {
		id := "reprov-deleted"
		e := provtest.SymIndividual(id)
		e.IotHubs = []string{a.HostName}
		pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
		cred := provtest.Cred{SAS: h.DeviceToken(id, pk)}
		h.settle(t, cred, id)
		if err := h.Store.DeleteRegistration(context.Background(), id, ""); err != nil {
			t.Fatal(err)
		}
		e.IotHubs = []string{b.HostName}
		h.PutIndividual(e)
		a.ResetCalls()
		b.ResetCalls()
		op := h.settle(t, cred, id)
		checkResult(t, op.RegistrationState, want{regID: id, deviceID: id, hub: b.HostName}, time.Time{})
		wantCalls(t, "hub A", a.Server)
		wantCalls(t, "hub B", b.Server, "PUT /devices/"+id+" → 200")
	})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func fmtCalls(cs []string, id string) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = strings.ReplaceAll(c, "%s", id)
	}
	return out
}

func mustDevice(t testing.TB, h *hubtest.IoTHub, id string) hubtest.Device {
	t.Helper()
	d, ok := h.Device(id)
	if !ok {
		t.Fatalf("hub %s has no device %s", h.HostName, id)
	}
	return d
}

// TestHubFailures: what a hub that refuses, fails or hangs does to a
// registration. The registration ends "failed" with a message that names
// the hub and quotes its answer, and nothing is left half-done: the device
// stays where it was, a device created for nothing is deleted again.
func TestHubFailures(t *testing.T) {
	t.Parallel()
	h, _, a, b := twoHubs(t, options{assignWait: 300 * time.Millisecond, assignTimeout: 3 * time.Second})
	enroll := func(id string, hubs ...string) (provtest.Cred, *dps.IndividualEnrollment) {
		e := provtest.SymIndividual(id)
		e.IotHubs = hubs
		pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
		return provtest.Cred{SAS: h.DeviceToken(id, pk)}, e
	}
	failed := func(t *testing.T, op *dps.RegistrationOperationStatus, id string, code int, text ...string) {
		t.Helper()
		checkResult(t, op.RegistrationState, want{regID: id, status: dps.StatusFailed, errorCode: code}, time.Time{})
		for _, s := range text {
			if !strings.Contains(op.RegistrationState.ErrorMessage, s) {
				t.Errorf("errorMessage %q does not say %q", op.RegistrationState.ErrorMessage, s)
			}
		}
	}

	t.Run("refused credentials", func(t *testing.T) {
		cred, _ := enroll("fail-refused", a.HostName)
		a.RefuseKeys(true)
		defer a.RefuseKeys(false)
		a.ResetCalls()
		op := h.settle(t, cred, "fail-refused")
		failed(t, op, "fail-refused", dpserr.CodeHubUnauthorized, "IoT hub "+a.HostName+" refused dpsd's credentials", "IotHubUnauthorizedAccess")
		wantCalls(t, "hub A (a refusal is not retried)", a.Server, "PUT /devices/fail-refused → 401")
		rec, _ := h.Store.Registration(context.Background(), "fail-refused")
		if !rec.Placement.IsZero() {
			t.Errorf("placement %+v after a failed first assignment", rec.Placement)
		}
	})

	t.Run("server errors are retried, then fail", func(t *testing.T) {
		cred, _ := enroll("fail-5xx", a.HostName)
		a.ResetCalls()
		a.FailNext(4, http.StatusServiceUnavailable)
		op := h.settle(t, cred, "fail-5xx")
		failed(t, op, "fail-5xx", dpserr.CodeHubFailed, "IoT hub "+a.HostName+" answered 503 Service Unavailable to create device", "failed on purpose", "(4 attempts)")
		if n := len(a.Calls()); n != 4 {
			t.Errorf("%d calls, want 4 attempts", n)
		}
		if _, ok := a.Device("fail-5xx"); ok {
			t.Error("the hub has the device of a failed registration")
		}
	})

	t.Run("a transient error is retried and succeeds", func(t *testing.T) {
		cred, _ := enroll("retry-ok", a.HostName)
		a.ResetCalls()
		a.FailNext(1, http.StatusTooManyRequests)
		op := h.settle(t, cred, "retry-ok")
		checkResult(t, op.RegistrationState, want{regID: "retry-ok", deviceID: "retry-ok", hub: a.HostName}, time.Time{})
		wantCalls(t, "hub A", a.Server, "PUT /devices/retry-ok → 429", "PUT /devices/retry-ok → 200")
	})

	t.Run("a hub that hangs: assigning, then failed", func(t *testing.T) {
		cred, _ := enroll("fail-slow", a.HostName)
		a.SetDelay(time.Minute)
		defer a.SetDelay(0)
		r := h.register(t, cred, "fail-slow").must(t, "register")
		first := r.operation(t)
		if r.Status != http.StatusAccepted || first.Status != dps.StatusAssigning || r.Header.Get("Retry-After") != "3" {
			t.Fatalf("register while the hub hangs: %s (Retry-After %q), want 202 assigning with Retry-After 3", r, r.Header.Get("Retry-After"))
		}
		op := h.pollUntilDone(t, cred, "fail-slow", first)
		failed(t, op, "fail-slow", dpserr.CodeHubFailed, "IoT hub "+a.HostName+" did not answer create device", "no answer within")
	})

	t.Run("a twin the hub refuses: the device created for it is deleted", func(t *testing.T) {
		cred, e := enroll("fail-twin", a.HostName)
		e.InitialTwin = &dps.InitialTwin{Tags: json.RawMessage(`{"$bad":1}`)}
		h.PutIndividual(e)
		a.ResetCalls()
		op := h.settle(t, cred, "fail-twin")
		failed(t, op, "fail-twin", dpserr.CodeHubFailed, "answered 400 Bad Request to merge twin", "ArgumentInvalid")
		wantCalls(t, "hub A", a.Server, "PUT /devices/fail-twin → 200", "PATCH /twins/fail-twin If-Match:* → 400", "DELETE /devices/fail-twin If-Match:* → 204")
	})

	t.Run("a move the new hub refuses leaves the device where it was, and a later one completes", func(t *testing.T) {
		cred, e := enroll("fail-move", a.HostName)
		h.settle(t, cred, "fail-move")
		e.IotHubs = []string{b.HostName}
		h.PutIndividual(e)
		b.RefuseKeys(true)
		a.ResetCalls()
		op := h.settle(t, cred, "fail-move")
		failed(t, op, "fail-move", dpserr.CodeHubUnauthorized, b.HostName)
		wantCalls(t, "hub A (its twin read, nothing removed)", a.Server, "GET /twins/fail-move → 200")
		mustDevice(t, a, "fail-move")
		rec, _ := h.Store.Registration(context.Background(), "fail-move")
		if rec.Placement.Hub != a.HostName {
			t.Errorf("placement %+v after a failed move, want hub A", rec.Placement)
		}
		b.RefuseKeys(false)
		op = h.settle(t, cred, "fail-move")
		checkResult(t, op.RegistrationState, want{regID: "fail-move", deviceID: "fail-move", hub: b.HostName, substatus: dps.SubstatusDeviceDataMigrated}, time.Time{})
		if _, ok := a.Device("fail-move"); ok {
			t.Error("the device is still on hub A after the move")
		}
	})

	t.Run("a removal the old hub refuses after the move is logged; the device is on its new hub", func(t *testing.T) {
		cred, e := enroll("fail-remove", a.HostName)
		h.settle(t, cred, "fail-remove")
		e.IotHubs, e.ReprovisionPolicy = []string{b.HostName}, &dps.ReprovisionPolicy{UpdateHubAssignment: true}
		h.PutIndividual(e)
		a.RefuseKeys(true)
		defer a.RefuseKeys(false)
		op := h.settle(t, cred, "fail-remove")
		checkResult(t, op.RegistrationState, want{regID: "fail-remove", deviceID: "fail-remove", hub: b.HostName, substatus: dps.SubstatusDeviceDataReset}, time.Time{})
		mustDevice(t, b, "fail-remove")
		if h.logs.Count("could not be removed from the hub it left") == 0 {
			t.Error("no warning about the device left on the old hub")
		}
	})
}

// TestHubJobSurvivesItsNode: a node stops in the middle of a slow hub call
// (its jobs are cut off, as by a crash); the operation stays "assigning"
// with its lease, and once the lease runs out another node takes the job
// over: through a poll of the operation, or through its sweeper.
func TestHubJobSurvivesItsNode(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"poll", "sweeper"} {
		t.Run(via, func(t *testing.T) {
			// The job's timeout is far longer than the test takes to stop
			// the node, so that the job is cut off, not timed out.
			h, ca := hubHarness(t, options{assignWait: 100 * time.Millisecond, assignTimeout: 30 * time.Second})
			iot := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
			h.linkIoTHub(iot)
			id := "survivor-" + via
			e := provtest.SymIndividual(id)
			pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
			cred := provtest.Cred{SAS: h.DeviceToken(id, pk)}

			op := h.stopMidAssignment(t, iot, cred, id, nil)
			stored, err := h.Store.Operation(context.Background(), op.OperationID)
			if err != nil || stored.Status != dps.StatusAssigning || stored.Job == nil {
				t.Fatalf("after the node stopped: %+v, %v; want the operation assigning with its job", stored, err)
			}

			other := h.otherNode(t)
			var final *dps.RegistrationOperationStatus
			switch via {
			case "poll":
				ans, err := other.OperationStatus(context.Background(), provisioning.Request{Transport: "https", IDScope: h.Scope, RegistrationID: id,
					Credentials: attest.Credentials{SAS: cred.SAS}}, op.OperationID)
				if err != nil {
					t.Fatal(err)
				}
				final = ans.Body
			case "sweeper":
				ctx, stop := context.WithCancel(context.Background())
				go other.Sweep(ctx)
				deadline := time.Now().Add(requestTimeout)
				for {
					got, err := h.Store.Operation(context.Background(), op.OperationID)
					if err != nil {
						t.Fatal(err)
					}
					if got.Job == nil {
						final = &dps.RegistrationOperationStatus{OperationID: got.ID, Status: got.Status, RegistrationState: got.Result}
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the sweeper did not finish the job")
					}
					time.Sleep(20 * time.Millisecond)
				}
				stop()
			}
			if final.Status != dps.StatusAssigned {
				t.Fatalf("the job taken over ended %s: %s", final.Status, testutil.JSON(t, final))
			}
			checkResult(t, final.RegistrationState, want{regID: id, deviceID: id, hub: iot.HostName}, time.Time{})
			mustDevice(t, iot, id)
			// The device's poll (at the first node) now gets the outcome.
			p := h.poll(t, cred, id, op.OperationID).must(t, "poll")
			if p.Status != http.StatusOK || p.operation(t).Status != dps.StatusAssigned {
				t.Errorf("poll after the takeover: %s", p)
			}
			if left, err := h.Store.ExpiredJobs(context.Background(), time.Now().Add(time.Hour), 10); err != nil || len(left) != 0 {
				t.Errorf("jobs left: %v, %v", left, err)
			}
		})
	}
}

// stopMidAssignment registers the device (with body; nil: the default)
// while the hub hangs, then stops this node as it dies: its job is cut off
// before any answer. It returns the operation, left assigning.
func (h *harness) stopMidAssignment(t *testing.T, iot *hubtest.IoTHub, cred provtest.Cred, id string, body []byte) *dps.RegistrationOperationStatus {
	t.Helper()
	iot.SetDelay(time.Minute)
	r := h.registerBody(t, cred, id, body).must(t, "register")
	op := r.operation(t)
	if op.Status != dps.StatusAssigning {
		t.Fatalf("register: %s, want assigning", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.Pipeline.Drain(ctx)
	iot.SetDelay(0)
	return op
}

// otherNode is another node on the same database, whose clock is past the
// lease of this node's jobs.
func (h *harness) otherNode(t *testing.T) *provisioning.Pipeline {
	other := &provisioning.Pipeline{Store: h.Store, Attest: &attest.Attestor{Store: h.Store, Log: h.Pipeline.Log}, Log: h.Pipeline.Log,
		IDScope: h.Scope, RetryAfter: 3, Outbound: h.Pipeline.Outbound, AssignTimeout: time.Second,
		Now: func() time.Time { return time.Now().Add(61 * time.Second) }}
	t.Cleanup(func() { other.Drain(context.Background()) })
	return other
}

// TestHubFastPath: with no device registry anywhere, a registration makes
// no call out and no job: the register answer is terminal, as before.
func TestHubFastPath(t *testing.T) {
	t.Parallel()
	h, ca := hubHarness(t, options{})
	iot := hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})
	h.LinkHub(iot.HostName, 1, true) // registry none
	e := provtest.SymIndividual("fast-dev")
	pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
	before := provtest.TakeSnapshot(t, h.db)
	op := h.provision(t, provtest.Cred{SAS: h.DeviceToken("fast-dev", pk)}, "fast-dev")
	checkResult(t, op.RegistrationState, want{regID: "fast-dev", deviceID: "fast-dev", hub: iot.HostName}, time.Time{})
	after := provtest.TakeSnapshot(t, h.db)
	if len(after.Operations) != len(before.Operations)+1 || len(after.Registrations) != len(before.Registrations)+1 {
		t.Errorf("store before %s, after %s: want one record and one operation", before, after)
	}
	wantCalls(t, "a hub without a device registry", iot.Server)
}
