package provisioning_test

// Custom allocation and the registry webhook through the pipeline, against
// the doubles of hubtest: what the webhooks receive, what the device gets
// back, what the hubs receive.

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// registerWith sends a register request whose body carries payload (JSON).
func (h *harness) registerWith(t testing.TB, c provtest.Cred, id, payload string) *dps.RegistrationOperationStatus {
	t.Helper()
	body := `{"registrationId":"` + id + `","payload":` + payload + `}`
	r := h.do(t, c, http.MethodPut, regPath(h.Scope, id)+"/register", nil, []byte(body)).must(t, "register")
	if r.Status != http.StatusAccepted {
		t.Fatalf("register: %s", r)
	}
	return h.pollUntilDone(t, c, id, r.operation(t))
}

// TestCustomAllocation: the webhook chooses among the offered hubs; the
// device's payload reaches it and its payload reaches the device; its
// initial twin is used on a first assignment and on a move that resets, and
// re-provisioning tells it where the device is.
func TestCustomAllocation(t *testing.T) {
	t.Parallel()
	h, ca, a, b := twoHubs(t, options{assignWait: 300 * time.Millisecond, assignTimeout: 3 * time.Second})
	w := hubtest.NewAllocationWebhook(t, hubtest.Options{CA: ca})
	// The webhook assigns to the hub the device's payload names, with a
	// payload and a twin of its own.
	w.Respond(func(req *allocation.CustomRequest) (int, []byte) {
		var p struct{ Hub string }
		json.Unmarshal(req.DeviceRuntimeContext.Payload, &p)
		out, _ := json.Marshal(map[string]any{"iotHubHostName": p.Hub, "payload": map[string]any{"welcome": req.DeviceRuntimeContext.RegistrationID},
			"initialTwin": map[string]any{"tags": map[string]any{"from": "webhook"}}})
		return http.StatusOK, out
	})
	enroll := func(id string, policy *dps.ReprovisionPolicy) (provtest.Cred, *dps.IndividualEnrollment) {
		e := provtest.SymIndividual(id)
		e.AllocationPolicy, e.ReprovisionPolicy = dps.AllocationCustom, policy
		e.CustomAllocationDefinition = &dps.CustomAllocationDefinition{WebhookURL: w.URL + "/api/allocate?code=FUNCTION-KEY", APIVersion: "2021-10-01"}
		e.InitialTwin = &dps.InitialTwin{Tags: json.RawMessage(`{"from":"enrollment"}`)}
		pk, _ := provtest.Keys(t, h.PutIndividual(e).Attestation)
		return provtest.Cred{SAS: h.DeviceToken(id, pk)}, e
	}
	payloadFor := func(hub *hubtest.IoTHub) string { return `{"Hub":"` + hub.HostName + `","model":"t-1000"}` }
	lastRequest := func(t *testing.T) allocation.CustomRequest {
		t.Helper()
		rs := w.Requests()
		if len(rs) == 0 {
			t.Fatal("the webhook was not called")
		}
		return rs[len(rs)-1]
	}
	tags := func(d hubtest.Device) string { return testutil.JSON(t, d.Tags) }

	t.Run("first assignment: payloads both ways, the webhook's twin", func(t *testing.T) {
		cred, _ := enroll("custom-1", nil)
		op := h.registerWith(t, cred, "custom-1", payloadFor(b))
		checkResult(t, op.RegistrationState, want{regID: "custom-1", deviceID: "custom-1", hub: b.HostName}, time.Time{})
		if got := string(op.RegistrationState.Payload); got != `{"welcome":"custom-1"}` {
			t.Errorf("registrationState.payload = %s, want the webhook's", got)
		}
		req := lastRequest(t)
		rc := req.DeviceRuntimeContext
		if rc.RegistrationID != "custom-1" || rc.SymmetricKey == nil || rc.CurrentIotHubHostName != "" || rc.CurrentDeviceID != "" {
			t.Errorf("deviceRuntimeContext %s", testutil.JSON(t, rc))
		}
		sameJSON(t, "the device's payload at the webhook", rc.Payload, payloadFor(b))
		if !slices.Equal(req.LinkedHubs, []string{a.HostName, b.HostName}) && !slices.Equal(req.LinkedHubs, []string{b.HostName, a.HostName}) {
			t.Errorf("linkedHubs %v, want both hubs", req.LinkedHubs)
		}
		e := req.IndividualEnrollment
		if e == nil || e.Attestation.SymmetricKey != nil || !strings.HasSuffix(e.CustomAllocationDefinition.WebhookURL, "?****") {
			t.Errorf("the enrollment sent to the webhook: %s; want it without keys and with the URL's query masked", testutil.JSON(t, e))
		}
		if got := tags(mustDevice(t, b, "custom-1")); got != `{"from":"webhook"}` {
			t.Errorf("hub B tags %s, want the webhook's twin", got)
		}
		if _, ok := a.Device("custom-1"); ok {
			t.Error("hub A has the device")
		}
	})

	t.Run("re-provisioning: the current hub is sent, the migrated twin kept", func(t *testing.T) {
		cred := provtest.Cred{SAS: h.DeviceToken("custom-1", mustKey(t, h, "custom-1"))}
		op := h.registerWith(t, cred, "custom-1", payloadFor(a))
		checkResult(t, op.RegistrationState, want{regID: "custom-1", deviceID: "custom-1", hub: a.HostName, substatus: dps.SubstatusDeviceDataMigrated}, time.Time{})
		rc := lastRequest(t).DeviceRuntimeContext
		if rc.CurrentIotHubHostName != b.HostName || rc.CurrentDeviceID != "custom-1" {
			t.Errorf("currentIotHubHostName %q, currentDeviceId %q; want hub B and the device", rc.CurrentIotHubHostName, rc.CurrentDeviceID)
		}
		if string(op.RegistrationState.Payload) != `{"welcome":"custom-1"}` {
			t.Errorf("payload %s, want the webhook's on re-provisioning too", op.RegistrationState.Payload)
		}
		if got := tags(mustDevice(t, a, "custom-1")); got != `{"from":"webhook"}` {
			t.Errorf("hub A tags %s, want the twin migrated from hub B", got)
		}
		if _, ok := b.Device("custom-1"); ok {
			t.Error("the device is still on hub B")
		}
	})

	t.Run("a move that resets takes the webhook's twin", func(t *testing.T) {
		cred, _ := enroll("custom-reset", &dps.ReprovisionPolicy{UpdateHubAssignment: true})
		h.registerWith(t, cred, "custom-reset", payloadFor(a))
		a.PutDevice("custom-reset", mustDevice(t, a, "custom-reset").Auth, `{"from":"operator"}`, "")
		op := h.registerWith(t, cred, "custom-reset", payloadFor(b))
		checkResult(t, op.RegistrationState, want{regID: "custom-reset", deviceID: "custom-reset", hub: b.HostName, substatus: dps.SubstatusDeviceDataReset}, time.Time{})
		if got := tags(mustDevice(t, b, "custom-reset")); got != `{"from":"webhook"}` {
			t.Errorf("hub B tags %s, want the webhook's twin", got)
		}
	})

	t.Run("never re-provision offers only the current hub", func(t *testing.T) {
		cred, _ := enroll("custom-never", &dps.ReprovisionPolicy{})
		h.registerWith(t, cred, "custom-never", payloadFor(a))
		op := h.registerWith(t, cred, "custom-never", payloadFor(a))
		checkResult(t, op.RegistrationState, want{regID: "custom-never", deviceID: "custom-never", hub: a.HostName, substatus: dps.SubstatusReprovisionedToInitialAssignment}, time.Time{})
		if got := lastRequest(t).LinkedHubs; !slices.Equal(got, []string{a.HostName}) {
			t.Errorf("linkedHubs %v, want only the current hub", got)
		}
		op = h.registerWith(t, cred, "custom-never", payloadFor(b)) // the webhook picks a hub it was not offered
		checkResult(t, op.RegistrationState, want{regID: "custom-never", status: dps.StatusFailed, errorCode: dpserr.CodeCustomAllocation,
			errorText: "which is not one of the linked hubs offered to it (" + a.HostName + ")"}, time.Time{})
	})

	failures := []struct {
		name   string
		set    func()
		reason string
	}{
		{"non-2xx", func() { w.SetAnswer(http.StatusInternalServerError, `{"error":"no capacity"}`) },
			`Custom allocation failed with status code: 500. The webhook answered: {"error":"no capacity"}`},
		{"bad JSON", func() { w.SetAnswer(http.StatusOK, `<html>`) }, "Custom allocation failed: the webhook's answer is not a JSON AllocationResponse"},
		{"hub not linked", func() { w.SetAnswer(http.StatusOK, `{"iotHubHostName":"elsewhere.azure-devices.net"}`) },
			`Custom allocation failed: the webhook chose IoT hub "elsewhere.azure-devices.net", which is not one of the linked hubs offered to it`},
		{"timeout", func() { w.SetAnswer(http.StatusOK, `{}`); w.SetDelay(time.Minute) }, "Custom allocation failed: the webhook did not answer in time"},
	}
	for _, f := range failures {
		t.Run("failure/"+f.name, func(t *testing.T) {
			id := "custom-fail-" + strings.ReplaceAll(f.name, " ", "-")
			cred, _ := enroll(id, nil)
			f.set()
			defer w.SetDelay(0)
			a.ResetCalls()
			b.ResetCalls()
			op := h.registerWith(t, cred, id, payloadFor(a))
			checkResult(t, op.RegistrationState, want{regID: id, status: dps.StatusFailed, errorCode: dpserr.CodeCustomAllocation, errorText: f.reason}, time.Time{})
			wantCalls(t, "hub A", a.Server)
			wantCalls(t, "hub B", b.Server)
		})
	}
}

func mustKey(t testing.TB, h *harness, id string) []byte {
	t.Helper()
	e, err := h.Store.Enrollment(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := provtest.Keys(t, e.Attestation)
	return pk
}

// TestRegistryWebhook: a linked hub whose device registry is an operator's
// webhook receives signed deviceAssigned events (the double refuses any
// whose signature does not verify), and deviceRemoved when the device moves
// away; a receiver that refuses dpsd's signature fails the registration
// with 400209.
func TestRegistryWebhook(t *testing.T) {
	t.Parallel()
	h, ca := hubHarness(t, options{})
	const secret = "a-secret-of-some-length"
	wa := hubtest.NewRegistryWebhook(t, hubtest.Options{CA: ca}, secret)
	wb := hubtest.NewRegistryWebhook(t, hubtest.Options{Plain: true}, secret) // http:// to loopback
	link := func(name, url, secret string) {
		_, err := h.Store.PutLinkedHub(context.Background(), &store.LinkedHub{Name: name, AllocationWeight: 1, ApplyAllocationPolicy: true,
			DeviceRegistry: string(hub.KindWebhook), RegistryWebhookURL: url, RegistryWebhookSecret: secret}, "*")
		if err != nil {
			t.Fatal(err)
		}
	}
	link("broker-a.factory.example", wa.URL+"/dpsd", secret)
	link("broker-b.factory.example", wb.URL+"/dpsd", secret)
	e := provtest.SymIndividual("sensor-0042")
	e.IotHubs = []string{"broker-a.factory.example"}
	e.InitialTwin = &dps.InitialTwin{Tags: json.RawMessage(`{"line":"3"}`)}
	e.Capabilities = &dps.DeviceCapabilities{IotEdge: true}
	e = h.PutIndividual(e)
	pk, _ := provtest.Keys(t, e.Attestation)
	cred := provtest.Cred{SAS: h.DeviceToken("sensor-0042", pk)}

	op := h.registerWith(t, cred, "sensor-0042", `{"model":"t-1000"}`)
	checkResult(t, op.RegistrationState, want{regID: "sensor-0042", deviceID: "sensor-0042", hub: "broker-a.factory.example"}, time.Time{})
	evs := wa.Events()
	if len(evs) != 1 {
		t.Fatalf("broker A got %d verified events, want 1 (calls %v)", len(evs), calls(wa.Server))
	}
	ev := evs[0]
	if ev.Type != hub.EventDeviceAssigned || ev.Hub != "broker-a.factory.example" || ev.RegistrationID != "sensor-0042" || ev.DeviceID != "sensor-0042" ||
		ev.Substatus != dps.SubstatusInitialAssignment || ev.Attestation != dps.AttestationSymmetricKey || ev.TwinMode != "merge" ||
		ev.Authentication == nil || ev.Authentication.Type != hub.AuthSAS || ev.Authentication.SymmetricKey.PrimaryKey != b64(pk) ||
		ev.Capabilities == nil || !ev.Capabilities.IotEdge || ev.PreviousHub != "" {
		t.Errorf("event %s", testutil.JSON(t, ev))
	}
	sameJSON(t, "the event's initial twin", ev.InitialTwin, `{"tags":{"line":"3"}}`)
	sameJSON(t, "the event's payload", ev.Payload, `{"model":"t-1000"}`)
	c := wa.Calls()[0]
	if c.Header.Get(hub.EventHeader) != hub.EventDeviceAssigned || c.Header.Get(hub.DeliveryHeader) != ev.ID ||
		!hub.VerifySignature([]byte(secret), c.Body, c.Header.Get(hub.SignatureHeader)) {
		t.Errorf("delivery headers %v", c.Header)
	}

	// The device moves to broker B: B is told, with the twin it cannot
	// migrate (a webhook cannot be asked for one) replaced by the initial
	// twin; A is told the device left.
	e.IotHubs = []string{"broker-b.factory.example"}
	h.PutIndividual(e)
	op = h.settle(t, cred, "sensor-0042")
	checkResult(t, op.RegistrationState, want{regID: "sensor-0042", deviceID: "sensor-0042", hub: "broker-b.factory.example", substatus: dps.SubstatusDeviceDataMigrated}, time.Time{})
	evs = wb.Events()
	if len(evs) != 1 || evs[0].Type != hub.EventDeviceAssigned || evs[0].PreviousHub != "broker-a.factory.example" || evs[0].TwinMode != "replace" {
		t.Fatalf("broker B events %s", testutil.JSON(t, evs))
	}
	sameJSON(t, "broker B's initial twin", evs[0].InitialTwin, `{"tags":{"line":"3"}}`)
	if evs = wa.Events(); len(evs) != 2 || evs[1].Type != hub.EventDeviceRemoved || evs[1].NewHub != "broker-b.factory.example" || evs[1].DeviceID != "sensor-0042" {
		t.Fatalf("broker A events %s, want deviceAssigned then deviceRemoved", testutil.JSON(t, evs))
	}

	t.Run("a receiver that refuses the signature", func(t *testing.T) {
		link("broker-b.factory.example", wb.URL+"/dpsd", "another-secret-of-length")
		op := h.settle(t, cred, "sensor-0042")
		checkResult(t, op.RegistrationState, want{regID: "sensor-0042", status: dps.StatusFailed, errorCode: dpserr.CodeHubUnauthorized,
			errorText: "registry webhook " + wb.URL + "/dpsd of hub broker-b.factory.example refused dpsd's credentials"}, time.Time{})
		if !strings.Contains(op.RegistrationState.ErrorMessage, "signature does not verify") {
			t.Errorf("errorMessage %q does not quote the receiver's answer", op.RegistrationState.ErrorMessage)
		}
	})
}
