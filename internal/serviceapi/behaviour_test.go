package serviceapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// Behaviour that a golden file cannot show well: limits measured to the
// byte, races, and properties that need several requests to observe.

// TestBodyLimit: a body of exactly 96 KB is accepted, one byte more is 413
// and changes nothing.
func TestBodyLimit(t *testing.T) {
	s := startServer(t)
	body := func(size int) []byte {
		head := `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}, "optionalDeviceInformation": {"pad": "`
		tail := `"}}`
		return []byte(head + strings.Repeat("x", size-len(head)-len(tail)) + tail)
	}
	if r := s.do("PUT", "/enrollments/at-limit?api-version=2021-10-01", nil, body(dps.MaxMessageBytes)); r.Status != http.StatusOK {
		t.Fatalf("a body of exactly %d bytes: status %d: %s", dps.MaxMessageBytes, r.Status, truncate(r.Body))
	}
	before := s.snapshot()
	r := s.do("PUT", "/enrollments/over-limit?api-version=2021-10-01", nil, body(dps.MaxMessageBytes+1))
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body of %d bytes: status %d, want 413: %s", dps.MaxMessageBytes+1, r.Status, truncate(r.Body))
	}
	checkErrorBody(t, r, 413001, "larger than the 96 KB limit")
	if after := s.snapshot(); after != before {
		t.Errorf("the refused request changed the store")
	}
}

// TestConcurrentIfMatch: of many writers sending the same If-Match etag at
// once, exactly one wins; the others get 412. Deletes race the same way.
func TestConcurrentIfMatch(t *testing.T) {
	s := startServer(t)
	var created dps.IndividualEnrollment
	s.doJSON("PUT", "/enrollments/race?api-version=2021-10-01", nil, map[string]any{"attestation": map[string]any{"type": "tpm", "tpm": map[string]any{"endorsementKey": "AAAA"}}}, 200, &created)

	const writers = 12
	statuses := make([]int, writers)
	testutil.Together(writers, func(i int) {
		body := fmt.Sprintf(`{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}, "deviceId": "writer-%d"}`, i)
		statuses[i] = s.do("PUT", "/enrollments/race?api-version=2021-10-01", map[string]string{"If-Match": created.Etag}, []byte(body)).Status
	})
	exactlyOne(t, "writes with the same etag", statuses, http.StatusOK, http.StatusPreconditionFailed)

	var current dps.IndividualEnrollment
	s.doJSON("GET", "/enrollments/race?api-version=2021-10-01", nil, nil, 200, &current)
	testutil.Together(writers, func(i int) {
		statuses[i] = s.do("DELETE", "/enrollments/race?api-version=2021-10-01", map[string]string{"If-Match": current.Etag}, nil).Status
	})
	exactlyOne(t, "deletes with the same etag", statuses, http.StatusNoContent, http.StatusPreconditionFailed)
}

// exactlyOne fails t unless exactly one of the racing requests got status
// win and every other one lose.
func exactlyOne(t *testing.T, what string, statuses []int, win, lose int) {
	t.Helper()
	won := 0
	for i, st := range statuses {
		switch st {
		case win:
			won++
		case lose:
		default:
			t.Errorf("%s: request %d answered %d, want %d or %d", what, i, st, win, lose)
		}
	}
	if won != 1 {
		t.Errorf("%s: %d requests answered %d, want exactly 1 (statuses %v)", what, won, win, statuses)
	}
}

// TestCreateRace: of many creates (no If-Match) of one new ID, exactly one
// succeeds and the others get 409.
func TestCreateRace(t *testing.T) {
	s := startServer(t)
	const writers = 12
	statuses := make([]int, writers)
	testutil.Together(writers, func(i int) {
		statuses[i] = s.do("PUT", "/enrollmentGroups/race?api-version=2021-10-01", nil, []byte(`{"attestation": {"type": "symmetricKey"}}`)).Status
	})
	exactlyOne(t, "creates of one ID", statuses, http.StatusOK, http.StatusConflict)
}

// TestQueryPagingWalk pages through many enrollments with every page size
// and checks that each is returned exactly once, in order, and that only the
// last page lacks x-ms-continuation.
func TestQueryPagingWalk(t *testing.T) {
	s := startServer(t)
	const n = 23
	for i := range n {
		s.doJSON("PUT", fmt.Sprintf("/enrollments/walk-%02d", i), nil, map[string]any{"attestation": map[string]any{"type": "tpm", "tpm": map[string]any{"endorsementKey": "AAAA"}}}, 200, nil)
	}
	for size := 1; size <= n+1; size++ {
		var seen []string
		token := ""
		for pages := 0; ; pages++ {
			if pages > n+1 {
				t.Fatalf("page size %d: paging does not end", size)
			}
			h := map[string]string{"x-ms-max-item-count": fmt.Sprint(size)}
			if token != "" {
				h["x-ms-continuation"] = token
			}
			var items []dps.IndividualEnrollment
			r := s.doJSON("POST", "/enrollments/query?api-version=2021-10-01", h, map[string]string{"query": "*"}, 200, &items)
			if got := r.Header.Get("x-ms-item-type"); got != "Enrollment" {
				t.Fatalf("x-ms-item-type %q", got)
			}
			if len(items) > size {
				t.Fatalf("page size %d: %d items", size, len(items))
			}
			for _, e := range items {
				seen = append(seen, e.RegistrationID)
			}
			vals := r.Header.Values("x-ms-continuation")
			if len(vals) == 0 {
				break
			}
			if vals[0] == "" {
				t.Fatalf("page size %d: empty x-ms-continuation", size)
			}
			if len(items) < size {
				t.Errorf("page size %d: a short page (%d) still has a continuation", size, len(items))
			}
			token = vals[0]
		}
		if len(seen) != n {
			t.Errorf("page size %d: %d enrollments seen, want %d: %v", size, len(seen), n, seen)
			continue
		}
		for i, id := range seen {
			if want := fmt.Sprintf("walk-%02d", i); id != want {
				t.Errorf("page size %d: item %d is %s, want %s", size, i, id, want)
				break
			}
		}
	}
}

// TestPolicyEtag: a policy can be changed under an If-Match precondition,
// as the server's own 409 message asks ("send If-Match with its etag"). That
// needs the etag in the policy's representation.
func TestPolicyEtag(t *testing.T) {
	s := startServer(t)
	var created map[string]any
	s.doJSON("PUT", "/policies/reader?api-version=2021-10-01", nil, map[string]any{"rights": "EnrollmentRead"}, 200, &created)
	r := s.do("PUT", "/policies/reader?api-version=2021-10-01", nil, []byte(`{"rights": "EnrollmentRead, EnrollmentWrite"}`))
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "send If-Match with its etag") {
		t.Fatalf("re-create: status %d: %s", r.Status, r.Body)
	}
	var got map[string]any
	s.doJSON("GET", "/policies/reader?api-version=2021-10-01", nil, nil, 200, &got)
	etag, _ := got["etag"].(string)
	if etag == "" {
		t.Fatalf("GET /policies/reader has no etag, so the If-Match the 409 asks for cannot be sent: %v", got)
	}
	s.doJSON("PUT", "/policies/reader?api-version=2021-10-01", map[string]string{"If-Match": etag}, map[string]any{"rights": "EnrollmentRead, EnrollmentWrite"}, 200, nil)
	s.doJSON("PUT", "/policies/reader?api-version=2021-10-01", map[string]string{"If-Match": etag}, map[string]any{"rights": "EnrollmentRead"}, 412, nil)
}

// TestLinkedHubReadModifyWrite: a client that reads a linked hub and writes
// it back with one field changed (the usual read-modify-write of ARM
// resources, az iot dps linked-hub update) sends the masked connection
// string it was given. The update must succeed and keep the stored key.
func TestLinkedHubReadModifyWrite(t *testing.T) {
	s := startServer(t)
	const conn = "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=c2VjcmV0LWh1Yi1rZXktMDEyMzQ1Njc4OWFiY2RlZg=="
	s.doJSON("PUT", "/linkedHubs/hub1.azure-devices.net?api-version=2021-10-01", nil, map[string]any{"connectionString": conn}, 200, nil)
	var hub map[string]any
	s.doJSON("GET", "/linkedHubs/hub1.azure-devices.net?api-version=2021-10-01", nil, nil, 200, &hub)
	if cs, _ := hub["connectionString"].(string); strings.Contains(cs, "c2VjcmV0") || !strings.Contains(cs, "SharedAccessKey=****") {
		t.Fatalf("connectionString %q is not masked", cs)
	}
	hub["allocationWeight"] = 10
	r := s.do("PUT", "/linkedHubs/hub1.azure-devices.net?api-version=2021-10-01", map[string]string{"If-Match": hub["etag"].(string)}, []byte(testutil.JSON(t, hub)))
	if r.Status != http.StatusOK {
		t.Fatalf("writing back the hub as read, weight changed: status %d: %s", r.Status, r.Body)
	}
	h, err := s.Store.LinkedHub(context.Background(), "hub1.azure-devices.net")
	if err != nil {
		t.Fatal(err)
	}
	if h.ConnectionString != conn || h.AllocationWeight != 10 {
		t.Errorf("stored hub: connection string %q, weight %d; want the original key and weight 10", h.ConnectionString, h.AllocationWeight)
	}

	// A registry webhook's secret and URL query, masked in reads, keep
	// their stored values when written back as read.
	const url, secret = "https://registry.example/dpsd?code=FUNCTION-KEY", "a-secret-of-sixteen-or-more"
	s.doJSON("PUT", "/linkedHubs/broker.example?api-version=2021-10-01", nil, map[string]any{"deviceRegistry": "webhook", "registryWebhookUrl": url, "registryWebhookSecret": secret}, 200, nil)
	hub = nil
	s.doJSON("GET", "/linkedHubs/broker.example?api-version=2021-10-01", nil, nil, 200, &hub)
	if strings.Contains(testutil.JSON(t, hub), "FUNCTION-KEY") || strings.Contains(testutil.JSON(t, hub), secret) {
		t.Fatalf("a read shows the webhook's key or secret: %v", hub)
	}
	hub["location"] = "plant-1"
	if r := s.do("PUT", "/linkedHubs/broker.example?api-version=2021-10-01", map[string]string{"If-Match": hub["etag"].(string)}, []byte(testutil.JSON(t, hub))); r.Status != http.StatusOK {
		t.Fatalf("writing back the webhook hub as read: status %d: %s", r.Status, r.Body)
	}
	if h, err = s.Store.LinkedHub(context.Background(), "broker.example"); err != nil {
		t.Fatal(err)
	}
	if h.RegistryWebhookURL != url || h.RegistryWebhookSecret != secret || h.Location != "plant-1" {
		t.Errorf("stored hub: URL %q, secret %q, location %q; want the originals and plant-1", h.RegistryWebhookURL, h.RegistryWebhookSecret, h.Location)
	}
}

// TestEnrollmentShowsRegistrationState: an individual enrollment whose
// device has registered carries its registrationState (a read-only field of
// the IndividualEnrollment model); group and registration reads do not.
func TestEnrollmentShowsRegistrationState(t *testing.T) {
	s := startServer(t)
	s.doJSON("PUT", "/enrollments/solo-1?api-version=2021-10-01", nil, map[string]any{"attestation": map[string]any{"type": "tpm", "tpm": map[string]any{"endorsementKey": "AAAA"}}}, 200, nil)
	if _, err := s.Store.SaveRegistration(context.Background(), &store.Registration{Result: &dps.DeviceRegistrationResult{
		RegistrationID: "solo-1", Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment, AssignedHub: "hub1.azure-devices.net", DeviceID: "solo-1",
	}, AppliedTwin: &dps.InitialTwin{Tags: json.RawMessage(`{"site":"north"}`)}}, "", nil); err != nil {
		t.Fatal(err)
	}
	var e dps.IndividualEnrollment
	s.doJSON("GET", "/enrollments/solo-1?api-version=2021-10-01", nil, nil, 200, &e)
	if e.RegistrationState == nil {
		t.Fatal("GET /enrollments/solo-1 has no registrationState although the device is registered")
	}
	if e.RegistrationState.Status != dps.StatusAssigned || e.RegistrationState.AssignedHub != "hub1.azure-devices.net" || e.RegistrationState.Etag == "" {
		t.Errorf("registrationState %+v", e.RegistrationState)
	}
	// The registration state shows the twin dpsd applied in the hub.
	var st dps.DeviceRegistrationState
	s.doJSON("GET", "/registrations/solo-1?api-version=2021-10-01", nil, nil, 200, &st)
	if st.AppliedTwin == nil || string(st.AppliedTwin.Tags) != `{"site":"north"}` {
		t.Errorf("registration state appliedTwin %+v, want the tags applied", st.AppliedTwin)
	}
}

// TestAttestationMechanismRights: the attestation mechanism returns
// secrets; a policy without enrollment rights gets none. EnrollmentRead
// reads them, as with Azure, unless --protect-enrollment-keys, which asks
// for EnrollmentWrite.
func TestAttestationMechanismRights(t *testing.T) {
	for _, tc := range []struct {
		protect bool
		policy  string // its rights
		status  int
		reason  string
	}{
		{false, "RegistrationStatusRead", http.StatusUnauthorized, "does not grant EnrollmentRead"},
		{false, "EnrollmentRead", http.StatusOK, ""},
		{true, "EnrollmentRead", http.StatusUnauthorized, "does not grant EnrollmentWrite (it grants EnrollmentRead); with --protect-enrollment-keys, reading an attestation mechanism (it holds the symmetric keys) needs EnrollmentWrite"},
		{true, "EnrollmentRead, EnrollmentWrite", http.StatusOK, ""},
	} {
		t.Run(fmt.Sprintf("protect=%v/%s", tc.protect, tc.policy), func(t *testing.T) {
			s := startServerWith(t, server.Config{ProtectEnrollmentKeys: tc.protect})
			s.doJSON("PUT", "/enrollments/sym?api-version=2021-10-01", nil, map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}, 200, nil)
			s.doJSON("PUT", "/enrollmentGroups/grp?api-version=2021-10-01", nil, map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}, 200, nil)
			s.doJSON("PUT", "/policies/p?api-version=2021-10-01", nil, map[string]any{"rights": tc.policy}, 200, nil)
			for _, path := range []string{"/enrollments/sym", "/enrollmentGroups/grp"} {
				r := s.do("POST", path+"/attestationmechanism?api-version=2021-10-01", map[string]string{"Authorization": s.token("p")}, nil)
				if r.Status != tc.status {
					t.Fatalf("%s: status %d, want %d: %s", path, r.Status, tc.status, r.Body)
				}
				if keys := strings.Contains(string(r.Body), "primaryKey"); keys != (tc.status == http.StatusOK) {
					t.Errorf("%s: keys in the answer: %v: %s", path, keys, r.Body)
				}
				if tc.reason != "" && !strings.Contains(string(r.Body), tc.reason) {
					t.Errorf("%s: %s, want %q", path, r.Body, tc.reason)
				}
				// A read of the enrollment never carries its keys.
				if g := s.do("GET", path+"?api-version=2021-10-01", map[string]string{"Authorization": s.token("p")}, nil); strings.Contains(string(g.Body), "primaryKey") {
					t.Errorf("GET %s returned keys: %s", path, g.Body)
				}
			}
		})
	}
}
