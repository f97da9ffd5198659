package e2e_test

// Helpers of the tests of assignment that reaches the hub (hub_*_test.go):
// dpsd started with --outbound-ca-file trusting the doubles of
// internal/hub/hubtest, which implement the IoT Hub registry API (and the
// webhooks) and record every request. Their names start with "hub".

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/test/e2e"
)

// hubEnv is two IoT hub doubles, A and B, and the CA file that makes dpsd
// trust them (and any other double made with ca).
type hubEnv struct {
	ca     *hubtest.CA
	caFile string
	a, b   *hubtest.IoTHub
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	ca := hubtest.NewCA(t)
	return &hubEnv{ca: ca, caFile: ca.File(t),
		a: hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}}),
		b: hubtest.NewIoTHub(t, hubtest.IoTHubOptions{Options: hubtest.Options{CA: ca}})}
}

// args are the flags dpsd serve needs to reach the doubles.
func (e *hubEnv) args(more ...string) []string {
	return append([]string{"--outbound-ca-file", e.caFile}, more...)
}

// link links both hubs to s with the CLI, as an operator would: their
// connection strings (HostName=localhost:PORT) and the azure-iothub
// registry.
func (e *hubEnv) link(t *testing.T, s *e2e.Server) {
	t.Helper()
	for _, h := range []*hubtest.IoTHub{e.a, e.b} {
		out := devCLI(t, "", append(hubLocal(s), "linked-hub", "create", "--connection-string", h.ConnectionString(), "--device-registry", "azure-iothub")...)
		if !strings.Contains(out, "deviceRegistry:") || !strings.Contains(out, "azure-iothub") {
			t.Fatalf("linked-hub create printed:\n%s", out)
		}
	}
}

// hubLocal are the flags that point the CLI at a server: its data
// directory, and its database when it has its own.
func hubLocal(s *e2e.Server) []string {
	if s.Store != "" {
		return []string{"--data", s.Dir, "--store", s.Store}
	}
	return []string{"--data", s.Dir}
}

// The initial twin of the re-provisioned devices, and the twin an operator
// sets in hub A afterwards.
const (
	hubInitialTags, hubInitialDesired = `{"fleet":"f1"}`, `{"interval":30}`
	hubChangedTags, hubChangedDesired = `{"fleet":"f1","room":"12"}`, `{"interval":60}`
)

// hubCase is one re-provisioning case: a device that first lands on hub A,
// then registers again with its enrollment changed as the case says.
type hubCase struct {
	name      string
	policy    string // --reprovision-policy ("" for none: the default)
	move      bool   // the enrollment names hub B before the second registration
	legacy    bool   // the second registration uses api-version 2018-04-01
	substatus string
	onB       bool
	// What each hub receives at the second registration ("%s": the device).
	callsA, callsB []string
	twin           string // the device's tags in its hub afterwards
}

var hubCases = []hubCase{
	{name: "migrate", move: true, substatus: "deviceDataMigrated", onB: true,
		callsA: []string{"GET /twins/%s 200", "DELETE /devices/%s 204"}, callsB: []string{"PUT /devices/%s 200", "PUT /twins/%s 200"}, twin: hubChangedTags},
	{name: "reset", policy: "reprovisionandresetdata", move: true, substatus: "deviceDataReset", onB: true,
		callsA: []string{"DELETE /devices/%s 204"}, callsB: []string{"PUT /devices/%s 200", "PUT /twins/%s 200"}, twin: hubInitialTags},
	{name: "never", policy: "never", move: true, substatus: "reprovisionedToInitialAssignment",
		callsA: []string{"PUT /devices/%s 409", "PUT /devices/%s 200"}, twin: hubChangedTags},
	{name: "same", substatus: "reprovisionedToInitialAssignment",
		callsA: []string{"PUT /devices/%s 409", "PUT /devices/%s 200"}, twin: hubChangedTags},
	{name: "legacy", move: true, legacy: true, substatus: "reprovisionedToInitialAssignment",
		callsA: []string{"PUT /devices/%s 409", "PUT /devices/%s 200"}, twin: hubChangedTags},
}

// enroll creates the device's symmetric-key enrollment on hub A with the
// CLI and returns its key.
func (e *hubEnv) enroll(t *testing.T, s *e2e.Server, id string, c hubCase) string {
	t.Helper()
	args := append(hubLocal(s), "enrollment", "create", "--enrollment-id", id, "--attestation-type", "symmetrickey",
		"--iot-hubs", e.a.HostName, "--initial-twin-tags", hubInitialTags, "--initial-twin-properties", hubInitialDesired, "-o", "json")
	if c.policy != "" {
		args = append(args, "--reprovision-policy", c.policy)
	}
	return str(devCLIJSON(t, "", args...), "attestation.symmetricKey.primaryKey")
}

// between changes what happens between the two registrations: an operator
// changes the device's twin in hub A, and the enrollment moves to hub B.
func (e *hubEnv) between(t *testing.T, s *e2e.Server, id string, c hubCase) {
	t.Helper()
	d, ok := e.a.Device(id)
	if !ok {
		t.Fatalf("hub A has no device %s after the first registration", id)
	}
	e.a.PutDevice(id, d.Auth, hubChangedTags, hubChangedDesired)
	if c.move {
		devCLI(t, "", append(hubLocal(s), "enrollment", "update", "--enrollment-id", id, "--iot-hubs", e.b.HostName)...)
	}
}

// checkFirst checks a first registration: assigned to hub A, which got the
// device and the initial twin.
func (e *hubEnv) checkFirst(t *testing.T, id string, result map[string]any) {
	t.Helper()
	devWant(t, id+" first registration", result, map[string]string{"assignedHub": e.a.HostName, "deviceId": id, "status": "assigned", "substatus": "initialAssignment"})
	hubWantCalls(t, id, "hub A", e.a.Server, "PUT /devices/%s 200", "PATCH /twins/%s 200")
	hubWantCalls(t, id, "hub B", e.b.Server)
	d, ok := e.a.Device(id)
	if !ok || hubJSON(d.Tags) != hubInitialTags || hubJSON(d.Desired) != hubInitialDesired || d.Auth.Type != "sas" {
		t.Errorf("%s in hub A: %+v, want the initial twin and sas authentication", id, d)
	}
}

// checkSecond checks the second registration of a case.
func (e *hubEnv) checkSecond(t *testing.T, s *e2e.Server, id string, c hubCase, result map[string]any) {
	t.Helper()
	hub, other := e.a, e.b
	if c.onB {
		hub, other = e.b, e.a
	}
	devWant(t, id+" second registration", result, map[string]string{"assignedHub": hub.HostName, "deviceId": id, "status": "assigned", "substatus": c.substatus})
	hubWantCalls(t, id, "hub A", e.a.Server, c.callsA...)
	hubWantCalls(t, id, "hub B", e.b.Server, c.callsB...)
	d, ok := hub.Device(id)
	if !ok || hubJSON(d.Tags) != c.twin {
		t.Errorf("%s in %s: tags %s (present %v), want %s", id, hub.HostName, hubJSON(d.Tags), ok, c.twin)
	}
	if _, ok := other.Device(id); ok {
		t.Errorf("%s is also in %s", id, other.HostName)
	}
	rec, found := devRecord(t, s, id)
	if !found || str(rec, "assignedHub") != hub.HostName || str(rec, "appliedTwin.tags.fleet") != "f1" {
		t.Errorf("registration record %v, want it on %s with the applied twin", rec, hub.HostName)
	}
}

// hubWantCalls checks the requests a double received for one device, in
// order: "METHOD /path STATUS".
func hubWantCalls(t *testing.T, id, what string, s *hubtest.Server, want ...string) {
	t.Helper()
	var got []string
	for _, c := range s.Calls() {
		if strings.HasSuffix(c.Path, "/"+id) {
			got = append(got, fmt.Sprintf("%s %s %d", c.Method, c.Path, c.Status))
		}
	}
	want = slices.Clone(want) // the cases' slices are shared
	for i := range want {
		want[i] = strings.ReplaceAll(want[i], "%s", id)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s received for %s:\n  %s\nwant:\n  %s", what, id, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func hubJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// hubCurl runs one device request with curl and returns the answer.
func hubCurl(t *testing.T, s *e2e.Server, id, key, method, suffix, apiVersion, body string) *walkthroughResponse {
	t.Helper()
	token := client.SASToken(s.IDScope, id, mustB64(t, key), time.Now().Add(time.Hour))
	cmd := fmt.Sprintf(`curl -sS -i --cacert '%s' -X %s -H 'Content-Type: application/json' -H 'Authorization: %s' https://localhost:%d/%s/registrations/%s%s?api-version=%s`,
		s.CAFile, method, token, s.Port, s.IDScope, id, suffix, apiVersion)
	if body != "" {
		cmd += " -d '" + body + "'"
	}
	return walkthroughCurl(t, "", cmd)
}

// hubCurlRegister registers a device with curl and polls (without waiting
// for Retry-After) until its operation ends; it returns the final
// registrationState. Strict mode must answer assigning first.
func hubCurlRegister(t *testing.T, s *e2e.Server, strict bool, id, key, apiVersion, payload string) map[string]any {
	t.Helper()
	body := `{"registrationId":"` + id + `"}`
	if payload != "" {
		body = `{"registrationId":"` + id + `","payload":` + payload + `}`
	}
	r := hubCurl(t, s, id, key, "PUT", "/register", apiVersion, body)
	if r.statusLine != "HTTP/1.1 202 Accepted" {
		t.Fatalf("register %s: %s", id, r.raw)
	}
	if strict && str(r.body, "status") != "assigning" {
		t.Errorf("strict register %s answered %s, want assigning", id, str(r.body, "status"))
	}
	deadline := time.Now().Add(30 * time.Second)
	for str(r.body, "status") == "assigning" {
		if time.Now().After(deadline) {
			t.Fatalf("%s still assigning after 30 s", id)
		}
		time.Sleep(50 * time.Millisecond)
		r = hubCurl(t, s, id, key, "GET", "/operations/"+str(r.body, "operationId"), apiVersion, "")
	}
	return r.body["registrationState"].(map[string]any)
}
