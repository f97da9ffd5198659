package serviceapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/serviceapi"
)

// fuzzRoutes are the service API operations that read a JSON body, each on
// one fixed record (If-Match: * overwrites it), so that the store stays
// small however long the fuzzer runs.
var fuzzRoutes = []struct{ method, path string }{
	{"PUT", "/enrollments/fuzz-1"},
	{"PUT", "/enrollmentGroups/fuzz-grp"},
	{"POST", "/enrollments"},
	{"POST", "/enrollmentGroups"},
	{"POST", "/enrollments/query"},
	{"POST", "/registrations/fuzz-grp/query"},
	{"PUT", "/certificates/fuzz-ca"},
	{"POST", "/certificates/fuzz-ca/verify"},
	{"PUT", "/linkedHubs/fuzz.azure-devices.net"},
	{"PUT", "/policies/fuzz-policy"},
	{"PATCH", "/settings"},
	{"PUT", "/faults"},
}

// FuzzServiceAPIBodies sends arbitrary bodies to every service API
// operation that reads one, as the owner: whatever arrives, the answer is
// never a 5xx, and it is JSON (a DPS error body for a 4xx) or empty.
func FuzzServiceAPIBodies(f *testing.F) {
	st, _, _ := provtest.OpenStore(f)
	f.Cleanup(func() { st.Close() })
	owner, err := st.Policy(f.Context(), dps.OwnerPolicyName)
	if err != nil {
		f.Fatal(err)
	}
	key, _ := sas.DecodeKey(owner.PrimaryKey)
	log := slog.New(slog.DiscardHandler)
	h := httpx.Wrap(log, serviceapi.New(serviceapi.Config{Store: st, Log: log,
		OwnHost: func(h string) bool { return h == "localhost" },
		Faults:  limits.NewFaults(nil, st, log, nil)}))
	for i, body := range []string{
		`{"attestation": {"type": "symmetricKey"}, "initialTwin": {"tags": {"a": 1}, "properties": {"desired": {"b": [1, 2]}}}}`,
		`{"attestation": {"type": "x509", "x509": {"caReferences": {"primary": "fuzz-ca"}}}, "iotHubs": ["fuzz.azure-devices.net"], "allocationPolicy": "static"}`,
		`{"mode": "create", "enrollments": [{"registrationId": "fuzz-b", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}}]}`,
		`{"mode": "delete", "enrollmentGroups": [{"enrollmentGroupId": "fuzz-grp"}]}`,
		`{"query": "SELECT * FROM enrollments"}`,
		``,
		`{"certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "isVerified": true}`,
		`{"certificate": "AAAA"}`,
		`{"connectionString": "HostName=fuzz.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAA==", "allocationWeight": 3}`,
		`{"rights": "EnrollmentRead, EnrollmentWrite"}`,
		`{"allocationPolicy": "static", "properties": {}}`,
		`{"rules": [{"action": "delay", "delay": "1ms", "fraction": 0.5, "registrationIds": "x[*"}]}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Add(uint8(0), []byte("{\"attestation\": {\"type\": \"symmetricKey\"}, \"initialTwin\": {\"tags\": {\"a\": \"\xff\"}}}"))
	f.Add(uint8(9), []byte(`{"rights": "EnrollmentRead", "primaryKey": "\u0000"}`))
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req := httptest.NewRequest(rt.method, "https://localhost"+rt.path+"?api-version=2021-10-01", bytes.NewReader(body))
		req.Header.Set("Authorization", sas.New("localhost", dps.OwnerPolicyName, key, time.Now().Add(time.Hour), true))
		req.Header.Set("Content-Type", "application/json")
		if rt.path != "/policies/fuzz-policy" {
			req.Header.Set("If-Match", "*")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, rt.path, body, w.Code, w.Body)
		}
		if w.Body.Len() == 0 {
			return
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %s: the answer is not JSON: %q", rt.method, rt.path, w.Body)
		}
		if w.Code >= 400 {
			var e map[string]any
			json.Unmarshal(w.Body.Bytes(), &e)
			if code, _ := e["errorCode"].(float64); int(code)/1000 != w.Code || !strings.Contains(w.Body.String(), `"trackingId"`) {
				t.Fatalf("%s %s: %d with %s", rt.method, rt.path, w.Code, w.Body)
			}
		}
	})
}
