package serviceapi_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/diff"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// badCase is a request the server must refuse. Whatever it is, the store
// must be the same afterwards.
type badCase struct {
	method  string
	path    string
	headers map[string]string
	body    string
	status  int
	code    int    // errorCode
	msg     string // a substring of the message
	// bulkCode and bulkMsg, for a bulk operation answered 200, are the
	// errorCode and a substring of errorStatus of its first failed item.
	bulkCode int
	bulkMsg  string
}

// keyB64 returns base64 of n bytes.
func keyB64(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// symKeyBody is an enrollment body with the given keys.
func symKeyBody(primary, secondary string) string {
	return fmt.Sprintf(`{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": %q, "secondaryKey": %q}}}`, primary, secondary)
}

func x509Body(field, cert string) string {
	return fmt.Sprintf(`{"attestation": {"type": "x509", "x509": {%q: {"primary": {"certificate": %q}}}}}`, field, cert)
}

func TestBadInput(t *testing.T) {
	s := startServer(t)
	fx := fixtures(t)

	// Something of every kind in the store, so that a refused request
	// that wrongly changed or deleted a record shows in the snapshot.
	s.doJSON("PUT", "/enrollments/existing", nil, json.RawMessage(symKeyBody(keyB64(32), keyB64(32))), 200, nil)
	s.doJSON("PUT", "/enrollmentGroups/grp", nil, json.RawMessage(symKeyBody(keyB64(32), keyB64(32))), 200, nil)
	s.doJSON("PUT", "/certificates/root-ca", nil, map[string]any{"certificate": fx["root"].PEM(), "isVerified": true}, 200, nil)
	s.doJSON("PUT", "/linkedHubs/hub1.azure-devices.net", nil, map[string]any{"connectionString": "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + keyB64(32)}, 200, nil)
	s.doJSON("PUT", "/policies/reader", nil, map[string]any{"rights": "EnrollmentRead"}, 200, nil)
	s.doJSON("PUT", "/policies/registrar", nil, map[string]any{"rights": "RegistrationStatusRead"}, 200, nil)
	if _, err := s.Store.SaveRegistration(t.Context(), &store.Registration{
		Result:            &dps.DeviceRegistrationResult{RegistrationID: "reg-1", Status: dps.StatusAssigned, AssignedHub: "hub1.azure-devices.net", DeviceID: "reg-1"},
		EnrollmentGroupID: "grp",
	}, "", nil); err != nil {
		t.Fatal(err)
	}
	before := s.snapshot("reg-1", "existing")
	cases := badInputCases(t, s, fx)
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		tc := cases[name]
		// Each case writes to its own ID ({id}), so that a case the server
		// wrongly accepts cannot turn the next case's 400 into a 409.
		id := fmt.Sprintf("case-%03d", i)
		tc.path = strings.ReplaceAll(tc.path, "{id}", id)
		tc.body = strings.ReplaceAll(tc.body, "{id}", id)
		t.Run(name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			resp := s.do(tc.method, tc.path, tc.headers, body)
			switch {
			case resp.Status != tc.status:
				t.Errorf("%s %s: status %d, want %d: %s", tc.method, short(tc.path), resp.Status, tc.status, truncate(resp.Body))
			case tc.bulkCode != 0:
				checkBulkError(t, resp, tc.bulkCode, tc.bulkMsg)
			default:
				checkErrorBody(t, resp, tc.code, tc.msg)
			}
			if after := s.snapshot("reg-1", "existing"); after != before {
				t.Errorf("the store changed:\n%s", diff.Diff("before", []byte(before), "after", []byte(after)))
				before = after // report each change once
			}
		})
	}
}

// checkErrorBody checks a DPS error answer: errorCode, a message with msg in
// it, a trackingId equal to x-ms-request-id, and the x-ms-error-code header.
func checkErrorBody(t *testing.T, resp *response, code int, msg string) {
	t.Helper()
	var e struct {
		ErrorCode    int    `json:"errorCode"`
		TrackingID   string `json:"trackingId"`
		Message      string `json:"message"`
		TimestampUtc string `json:"timestampUtc"`
	}
	if err := json.Unmarshal(resp.Body, &e); err != nil {
		t.Errorf("the answer is not a DPS error body: %v: %s", err, truncate(resp.Body))
		return
	}
	if e.ErrorCode != code {
		t.Errorf("errorCode %d, want %d (message %q)", e.ErrorCode, code, e.Message)
	}
	if e.ErrorCode/1000 != resp.Status {
		t.Errorf("errorCode %d does not start with the status %d", e.ErrorCode, resp.Status)
	}
	if len(e.Message) > 1024 {
		t.Errorf("the message is %d bytes long: it echoes what the client sent whole", len(e.Message))
	}
	if e.Message == "" || !strings.Contains(e.Message, msg) {
		t.Errorf("message %q does not say %q", e.Message, msg)
	}
	if e.TrackingID == "" || e.TrackingID != resp.Header.Get("x-ms-request-id") {
		t.Errorf("trackingId %q, x-ms-request-id %q", e.TrackingID, resp.Header.Get("x-ms-request-id"))
	}
	if !dpsTimeRE.MatchString(e.TimestampUtc) {
		t.Errorf("timestampUtc %q is not a DPS time", e.TimestampUtc)
	}
	if h := resp.Header.Get("x-ms-error-code"); h != fmt.Sprint(e.ErrorCode) {
		t.Errorf("x-ms-error-code %q, errorCode %d", h, e.ErrorCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
}

// checkBulkError checks a bulk answer whose first failed item has code and
// an errorStatus saying msg.
func checkBulkError(t *testing.T, resp *response, code int, msg string) {
	t.Helper()
	var r dps.BulkEnrollmentOperationResult
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		t.Errorf("the answer is not a bulk result: %v: %s", err, truncate(resp.Body))
		return
	}
	if r.IsSuccessful || len(r.Errors) == 0 {
		t.Errorf("isSuccessful %v with %d errors, want a failed item", r.IsSuccessful, len(r.Errors))
		return
	}
	if r.Errors[0].ErrorCode != code || !strings.Contains(r.Errors[0].ErrorStatus, msg) {
		t.Errorf("item error %d %q, want %d saying %q", r.Errors[0].ErrorCode, r.Errors[0].ErrorStatus, code, msg)
	}
}

func short(p string) string {
	if u, err := url.PathUnescape(p); err == nil && len(u) > 60 {
		return u[:60] + "..."
	}
	return p
}

func truncate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "..."
	}
	return string(b)
}

// badInputCases are the requests TestBadInput sends, by name, to a server
// holding the records it created.
func badInputCases(t *testing.T, s *testServer, fx map[string]*fixture) map[string]badCase {

	owner := s.ownerKey
	token := func(resource, keyName string, key []byte, expiry time.Time) map[string]string {
		return map[string]string{"Authorization": sas.New(resource, keyName, key, expiry, true)}
	}
	hour := time.Now().Add(time.Hour)
	validBody := symKeyBody(keyB64(32), keyB64(32))
	longID := strings.Repeat("a", 129)
	// A body one byte over the 96 KB limit, valid JSON otherwise.
	pad := func(size int) string {
		head := `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}, "optionalDeviceInformation": {"pad": "`
		tail := `"}}`
		return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
	}
	tooBig := pad(dps.MaxMessageBytes + 1)
	bulk11 := func() string {
		var items []string
		for i := range 11 {
			items = append(items, fmt.Sprintf(`{"registrationId": "bulk-%d", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA"}}}`, i))
		}
		return `{"mode": "create", "enrollments": [` + strings.Join(items, ",") + `]}`
	}()
	truncatedDER := base64.StdEncoding.EncodeToString(fx["device"].Cert.Raw[:len(fx["device"].Cert.Raw)/2])

	return map[string]badCase{
		// Bodies that are not the JSON they should be.
		"fail/malformed-json":       {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}`, status: 400, code: 400001, msg: "not valid JSON"},
		"fail/empty-body":           {method: "PUT", path: "/enrollments/{id}", status: 400, code: 400001, msg: "the request body is empty"},
		"fail/body-is-an-array":     {method: "PUT", path: "/enrollments/{id}", body: `[]`, status: 400, code: 400001, msg: "not valid JSON"},
		"fail/body-is-a-string":     {method: "PUT", path: "/enrollmentGroups/{id}", body: `"group"`, status: 400, code: 400001, msg: "not valid JSON"},
		"fail/registrationId-type":  {method: "PUT", path: "/enrollments/{id}", body: `{"registrationId": 5, "attestation": {"type": "symmetricKey"}}`, status: 400, code: 400001, msg: `field "registrationId" must be a string`},
		"fail/attestation-type":     {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": "symmetricKey"}`, status: 400, code: 400001, msg: `field "attestation" must be an object`},
		"fail/iotEdge-type":         {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "capabilities": {"iotEdge": "yes"}}`, status: 400, code: 400001, msg: `field "capabilities.iotEdge" must be true or false`},
		"fail/iotHubs-type":         {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "iotHubs": "hub1.azure-devices.net"}`, status: 400, code: 400001, msg: `field "iotHubs" must be an array`},
		"fail/weight-type":          {method: "PUT", path: "/linkedHubs/hub1.azure-devices.net", headers: map[string]string{"If-Match": "*"}, body: `{"allocationWeight": "heavy"}`, status: 400, code: 400001, msg: `field "allocationWeight" must be a number`},
		"fail/tags-not-object":      {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "initialTwin": {"tags": ["a"]}}`, status: 400, code: 400004, msg: "initialTwin.tags must be a JSON object"},
		"fail/desired-not-object":   {method: "PUT", path: "/enrollmentGroups/{id}", body: `{"attestation": {"type": "symmetricKey"}, "initialTwin": {"properties": {"desired": 3}}}`, status: 400, code: 400004, msg: "initialTwin.properties.desired must be a JSON object"},
		"fail/device-info-not-obj":  {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "optionalDeviceInformation": "x"}`, status: 400, code: 400004, msg: "optionalDeviceInformation must be a JSON object"},
		"fail/bulk-items-not-array": {method: "POST", path: "/enrollments", body: `{"mode": "create", "enrollments": {"registrationId": "{id}"}}`, status: 400, code: 400001, msg: `field "enrollments" must be an array`},
		"fail/query-not-object":     {method: "POST", path: "/enrollments/query", body: `"SELECT *"`, status: 400, code: 400001, msg: "not valid JSON"},
		"fail/verify-not-object":    {method: "POST", path: "/certificates/root-ca/verify", body: `[1]`, status: 400, code: 400001, msg: "not valid JSON"},
		"fail/tags-not-utf-8":       {method: "PUT", path: "/enrollments/{id}", body: "{\"attestation\": {\"type\": \"symmetricKey\"}, \"initialTwin\": {\"tags\": {\"site\": \"M\xfcnchen\"}}}", status: 400, code: 400001, msg: "it is not UTF-8"},
		"fail/group-tags-not-utf-8": {method: "PUT", path: "/enrollmentGroups/{id}", body: "{\"attestation\": {\"type\": \"symmetricKey\"}, \"initialTwin\": {\"tags\": {\"\xc3\": 1}}}", status: 400, code: 400001, msg: "it is not UTF-8"},
		"fail/bulk-not-utf-8":       {method: "POST", path: "/enrollments", body: "{\"mode\": \"create\", \"enrollments\": [{\"registrationId\": \"{id}\", \"attestation\": {\"type\": \"symmetricKey\"}, \"initialTwin\": {\"tags\": {\"a\": \"\xff\"}}}]}", status: 400, code: 400001, msg: "it is not UTF-8"},
		"fail/hub-location-nul":     {method: "PUT", path: "/linkedHubs/hub1.azure-devices.net", headers: map[string]string{"If-Match": "*"}, body: `{"location": "west\u0000"}`, status: 400, code: 400001, msg: "NUL character"},
		"fail/sent-as-text-plain":   {method: "PUT", path: "/enrollments/{id}", headers: map[string]string{"Content-Type": "text/plain"}, body: validBody, status: 415, code: 415001, msg: `sent as "text/plain"`},

		// Attestation and enrollment rules.
		"fail/unknown-attestation":     {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "password"}}`, status: 400, code: 400004, msg: `unknown attestation type "password"`},
		"fail/attestation-none":        {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "none"}}`, status: 400, code: 400004, msg: "attestation type none cannot authenticate"},
		"fail/no-attestation":          {method: "PUT", path: "/enrollments/{id}", body: `{"registrationId": "{id}"}`, status: 400, code: 400004, msg: "attestation is required"},
		"fail/no-attestation-type":     {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {}}`, status: 400, code: 400004, msg: "attestation.type is required"},
		"fail/group-no-attestation":    {method: "PUT", path: "/enrollmentGroups/{id}", body: `{}`, status: 400, code: 400004, msg: "attestation is required"},
		"fail/provisioning-status":     {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "provisioningStatus": "paused"}`, status: 400, code: 400004, msg: `provisioningStatus "paused"`},
		"fail/allocation-policy":       {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "allocationPolicy": "random"}`, status: 400, code: 400004, msg: `allocationPolicy "random"`},
		"fail/custom-without-webhook":  {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "allocationPolicy": "custom"}`, status: 400, code: 400004, msg: "custom needs customAllocationDefinition"},
		"fail/webhook-not-url":         {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "allocationPolicy": "custom", "customAllocationDefinition": {"webhookUrl": "alloc", "apiVersion": "2021-10-01"}}`, status: 400, code: 400004, msg: "customAllocationDefinition.webhookUrl: URL has no host"},
		"fail/webhook-no-apiversion":   {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "customAllocationDefinition": {"webhookUrl": "https://alloc.example.com/"}}`, status: 400, code: 400004, msg: "apiVersion is required"},
		"fail/iothub-not-host":         {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "iotHubs": ["hub one"]}`, status: 400, code: 400004, msg: "iotHubs"},
		"fail/device-id-chars":         {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "symmetricKey"}, "deviceId": "dev#1"}`, status: 400, code: 400004, msg: "device ID"},
		"fail/body-id-mismatch":        {method: "PUT", path: "/enrollments/{id}", body: `{"registrationId": "e2", "attestation": {"type": "symmetricKey"}}`, status: 400, code: 400004, msg: "does not match"},
		"fail/exists-no-if-match":      {method: "PUT", path: "/enrollments/existing", body: validBody, status: 409, code: 409201, msg: "already exists"},
		"fail/stale-etag":              {method: "PUT", path: "/enrollments/existing", headers: map[string]string{"If-Match": `"0000"`}, body: validBody, status: 412, code: 412001, msg: "does not match"},
		"fail/stale-etag-delete":       {method: "DELETE", path: "/enrollmentGroups/grp", headers: map[string]string{"If-Match": "0000"}, status: 412, code: 412001, msg: "does not match"},
		"fail/stale-etag-registration": {method: "DELETE", path: "/registrations/reg-1", headers: map[string]string{"If-Match": "IjAwMDAi"}, status: 412, code: 412001, msg: "does not match"},

		// Every rule of registration and enrollment group IDs.
		"fail/id-empty-bulk":          {method: "POST", path: "/enrollments", body: `{"mode": "create", "enrollments": [{"registrationId": "", "attestation": {"type": "symmetricKey"}}]}`, status: 200, bulkCode: 400004, bulkMsg: "has no registrationId"},
		"fail/group-id-empty-bulk":    {method: "POST", path: "/enrollmentGroups", body: `{"mode": "create", "enrollmentGroups": [{"attestation": {"type": "symmetricKey"}}]}`, status: 200, bulkCode: 400004, bulkMsg: "has no enrollmentGroupId"},
		"fail/id-129-chars":           {method: "PUT", path: "/enrollments/" + longID, body: validBody, status: 400, code: 400004, msg: "is 129 characters long; the limit is 128"},
		"fail/id-20KB":                {method: "PUT", path: "/enrollments/" + strings.Repeat("b", 20000), body: validBody, status: 400, code: 400004, msg: "is 20000 characters long"},
		"fail/route-20KB":             {method: "GET", path: "/enrollments/x/" + strings.Repeat("c", 20000), status: 404, code: 404000, msg: "... (20015 bytes)"},
		"fail/group-id-129-chars":     {method: "PUT", path: "/enrollmentGroups/" + longID, body: validBody, status: 400, code: 400004, msg: "is 129 characters long; the limit is 128"},
		"fail/id-leading-dash":        {method: "PUT", path: "/enrollments/-dev", body: validBody, status: 400, code: 400004, msg: "must start with a letter or digit"},
		"fail/id-leading-dot":         {method: "PUT", path: "/enrollments/.dev", body: validBody, status: 400, code: 400004, msg: "must start with a letter or digit"},
		"fail/id-leading-underscore":  {method: "PUT", path: "/enrollments/_dev", body: validBody, status: 400, code: 400004, msg: "must start with a letter or digit"},
		"fail/id-leading-colon":       {method: "PUT", path: "/enrollmentGroups/:grp", body: validBody, status: 400, code: 400004, msg: "must start with a letter or digit"},
		"fail/id-trailing-dot":        {method: "PUT", path: "/enrollments/dev.", body: validBody, status: 400, code: 400004, msg: "must end with a letter, digit or '-'"},
		"fail/id-trailing-underscore": {method: "PUT", path: "/enrollments/dev_", body: validBody, status: 400, code: 400004, msg: "must end with a letter, digit or '-'"},
		"fail/id-trailing-colon":      {method: "PUT", path: "/enrollmentGroups/grp:", body: validBody, status: 400, code: 400004, msg: "must end with a letter, digit or '-'"},
		"fail/id-space":               {method: "PUT", path: "/enrollments/my%20dev", body: validBody, status: 400, code: 400004, msg: "only letters, digits and - . _ : are allowed"},
		"fail/id-slash":               {method: "PUT", path: "/enrollments/my%2Fdev", body: validBody, status: 400, code: 400004, msg: "only letters, digits and - . _ : are allowed"},
		"fail/id-hash":                {method: "PUT", path: "/enrollments/my%23dev", body: validBody, status: 400, code: 400004, msg: "only letters, digits and - . _ : are allowed"},
		"fail/id-plus":                {method: "PUT", path: "/enrollmentGroups/a+b", body: validBody, status: 400, code: 400004, msg: "only letters, digits and - . _ : are allowed"},
		"fail/id-non-ascii":           {method: "PUT", path: "/enrollments/caf%C3%A9", body: validBody, status: 400, code: 400004, msg: "only letters, digits and - . _ : are allowed"},
		"fail/id-non-ascii-bulk":      {method: "POST", path: "/enrollments", body: `{"mode": "create", "enrollments": [{"registrationId": "dév", "attestation": {"type": "symmetricKey"}}]}`, status: 200, bulkCode: 400004, bulkMsg: "only letters, digits and - . _ : are allowed"},
		"fail/x509-id-65-chars":       {method: "PUT", path: "/enrollments/" + strings.Repeat("x", 65), body: x509Body("clientCertificates", fx["device"].PEM()), status: 400, code: 400004, msg: "may have at most 64"},
		"fail/ca-name-chars":          {method: "PUT", path: "/certificates/root%20ca", body: `{"certificate": "x"}`, status: 400, code: 400004, msg: "may contain only letters, digits and - . _"},
		"fail/ca-reference-name":      {method: "PUT", path: "/enrollmentGroups/{id}", body: `{"attestation": {"type": "x509", "x509": {"caReferences": {"primary": "root ca"}}}}`, status: 400, code: 400004, msg: "caReferences"},
		"fail/policy-name-chars":      {method: "PUT", path: "/policies/my%20policy", body: `{"rights": "EnrollmentRead"}`, status: 400, code: 400004, msg: "policy name"},

		// The 96 KB message limit.
		"fail/body-over-96KB":      {method: "PUT", path: "/enrollments/big", body: tooBig, status: 413, code: 413001, msg: "larger than the 96 KB limit"},
		"fail/bulk-body-over-96KB": {method: "POST", path: "/enrollments", body: `{"mode": "create", "enrollments": [` + tooBig + `]}`, status: 413, code: 413001, msg: "96 KB"},

		// Symmetric keys: base64 of 16 to 64 bytes.
		"fail/key-not-base64":           {method: "PUT", path: "/enrollments/{id}", body: symKeyBody("not base64!", keyB64(32)), status: 400, code: 400004, msg: "symmetricKey.primaryKey is not valid base64"},
		"fail/secondary-key-not-base64": {method: "PUT", path: "/enrollments/{id}", body: symKeyBody(keyB64(32), "%%%%"), status: 400, code: 400004, msg: "symmetricKey.secondaryKey is not valid base64"},
		"fail/key-15-bytes":             {method: "PUT", path: "/enrollments/{id}", body: symKeyBody(keyB64(15), keyB64(32)), status: 400, code: 400004, msg: "is 15 bytes; a key must be 16 to 64 bytes"},
		"fail/key-65-bytes":             {method: "PUT", path: "/enrollments/{id}", body: symKeyBody(keyB64(32), keyB64(65)), status: 400, code: 400004, msg: "is 65 bytes; a key must be 16 to 64 bytes"},
		"fail/group-key-15-bytes":       {method: "PUT", path: "/enrollmentGroups/{id}", body: symKeyBody(keyB64(15), keyB64(32)), status: 400, code: 400004, msg: "is 15 bytes"},
		"fail/key-update-too-short":     {method: "PUT", path: "/enrollments/existing", headers: map[string]string{"If-Match": "*"}, body: symKeyBody(keyB64(8), keyB64(32)), status: 400, code: 400004, msg: "is 8 bytes"},
		"fail/policy-key-65-bytes":      {method: "PUT", path: "/policies/{id}", body: `{"rights": "EnrollmentRead", "primaryKey": "` + keyB64(65) + `"}`, status: 400, code: 400004, msg: "primaryKey must be base64 of 16 to 64 bytes"},
		"fail/tpm-ek-not-base64":        {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "!!"}}}`, status: 400, code: 400004, msg: "tpm.endorsementKey is not valid base64"},
		"fail/tpm-srk-not-base64":       {method: "PUT", path: "/enrollments/{id}", body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "AAAA", "storageRootKey": "!!"}}}`, status: 400, code: 400004, msg: "tpm.storageRootKey is not valid base64"},

		// Certificates.
		"fail/cert-is-private-key":      {method: "PUT", path: "/enrollments/x509-device-1", body: x509Body("clientCertificates", fx["device"].KeyPEM(t)), status: 400, code: 400004, msg: "not a certificate: PEM block is PRIVATE KEY"},
		"fail/cert-garbage":             {method: "PUT", path: "/enrollments/x509-device-1", body: x509Body("clientCertificates", "hello, certificate"), status: 400, code: 400004, msg: "not PEM or base64 DER"},
		"fail/cert-base64-garbage":      {method: "PUT", path: "/enrollments/x509-device-1", body: x509Body("clientCertificates", base64.StdEncoding.EncodeToString([]byte("hello"))), status: 400, code: 400004, msg: "not PEM or base64 DER"},
		"fail/cert-truncated-der":       {method: "PUT", path: "/enrollments/x509-device-1", body: x509Body("clientCertificates", truncatedDER), status: 400, code: 400004, msg: "invalid certificate"},
		"fail/cert-broken-pem":          {method: "PUT", path: "/enrollments/x509-device-1", body: x509Body("clientCertificates", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), status: 400, code: 400004, msg: "invalid certificate"},
		"fail/cert-secondary-garbage":   {method: "PUT", path: "/enrollments/x509-device-1", body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": ` + jsonString(fx["device"].PEM()) + `}, "secondary": {"certificate": "junk"}}}}}`, status: 400, code: 400004, msg: "x509.clientCertificates.secondary.certificate"},
		"fail/signing-cert-private-key": {method: "PUT", path: "/enrollmentGroups/{id}", body: x509Body("signingCertificates", fx["root"].KeyPEM(t)), status: 400, code: 400004, msg: "not a certificate"},
		"fail/ca-upload-leaf":           {method: "PUT", path: "/certificates/leaf", body: `{"certificate": ` + jsonString(fx["device"].PEM()) + `}`, status: 400, code: 400004, msg: "is not a CA certificate"},
		"fail/ca-upload-garbage":        {method: "PUT", path: "/certificates/junk", body: `{"certificate": "junk"}`, status: 400, code: 400004, msg: "not PEM or base64 DER"},
		"fail/ca-upload-no-certificate": {method: "PUT", path: "/certificates/junk", body: `{"properties": {"isVerified": true}}`, status: 400, code: 400004, msg: "certificate is required"},
		"fail/verify-garbage":           {method: "POST", path: "/certificates/root-ca/verify", body: `{"certificate": "junk"}`, status: 400, code: 400004, msg: "verification"},

		// SAS tokens and rights.
		"fail/no-authorization": {method: "GET", path: "/enrollments/existing", headers: map[string]string{"Authorization": ""}, status: 401, code: 401002, msg: "has no Authorization header"},
		"fail/bearer-token":     {method: "PUT", path: "/enrollments/{id}", headers: map[string]string{"Authorization": "Bearer eyJhbGciOi"}, body: validBody, status: 401, code: 401002, msg: "malformed SAS token"},
		"fail/malformed-sas":    {method: "PUT", path: "/enrollments/{id}", headers: map[string]string{"Authorization": "SharedAccessSignature sr=" + s.Host + "&skn=provisioningserviceowner"}, body: validBody, status: 401, code: 401002, msg: "malformed SAS token"},
		"fail/sas-bad-expiry":   {method: "PUT", path: "/enrollments/{id}", headers: map[string]string{"Authorization": "SharedAccessSignature sr=" + s.Host + "&sig=abc&se=soon&skn=provisioningserviceowner"}, body: validBody, status: 401, code: 401002, msg: "malformed SAS token"},
		"fail/expired-sas":      {method: "DELETE", path: "/enrollments/existing", headers: token(s.Host, dps.OwnerPolicyName, owner, time.Now().Add(-time.Minute)), status: 401, code: 401002, msg: "expired"},
		"fail/forged-signature": {method: "DELETE", path: "/enrollments/existing", headers: token(s.Host, dps.OwnerPolicyName, []byte("forged-key-0123456789abcdef"), hour), status: 401, code: 401002, msg: "signature does not match"},
		"fail/wrong-key-name":   {method: "DELETE", path: "/enrollments/existing", headers: token(s.Host, "nobody", owner, hour), status: 401, code: 401002, msg: `"nobody", which does not exist`},
		"fail/no-key-name":      {method: "DELETE", path: "/enrollments/existing", headers: token(s.Host, "", owner, hour), status: 401, code: 401002, msg: "has no skn"},
		"fail/sr-other-host":    {method: "DELETE", path: "/enrollments/existing", headers: token("otherdps.azure-devices-provisioning.net", dps.OwnerPolicyName, owner, hour), status: 401, code: 401002, msg: "not a host name of this dpsd instance"},
		"fail/sr-and-host-header-name-another-host": {method: "DELETE", path: "/enrollments/existing",
			headers: map[string]string{"Host": "evil.example", "Authorization": sas.New("evil.example", dps.OwnerPolicyName, owner, hour, true)},
			status:  401, code: 401002, msg: `the SAS token is for "evil.example", which is not a host name of this dpsd instance`},
		"fail/sr-other-segment":    {method: "DELETE", path: "/enrollments/existing", headers: token(s.Host+"/enrollmentGroups", dps.OwnerPolicyName, owner, hour), status: 401, code: 401002, msg: "does not cover"},
		"fail/sr-segment-prefix":   {method: "DELETE", path: "/enrollmentGroups/grp", headers: token(s.Host+"/enrollment", dps.OwnerPolicyName, owner, hour), status: 401, code: 401002, msg: "does not cover"},
		"fail/reader-writes":       {method: "DELETE", path: "/enrollments/existing", headers: map[string]string{"Authorization": s.token("reader")}, status: 401, code: 401002, msg: "does not grant EnrollmentWrite"},
		"fail/reader-bulk":         {method: "POST", path: "/enrollments", headers: map[string]string{"Authorization": s.token("reader")}, body: `{"mode": "delete", "enrollments": [{"registrationId": "existing"}]}`, status: 401, code: 401002, msg: "does not grant EnrollmentWrite"},
		"fail/reader-deletes-reg":  {method: "DELETE", path: "/registrations/reg-1", headers: map[string]string{"Authorization": s.token("reader")}, status: 401, code: 401002, msg: "does not grant RegistrationStatusWrite"},
		"fail/reader-uploads-ca":   {method: "DELETE", path: "/certificates/root-ca", headers: map[string]string{"Authorization": s.token("reader")}, status: 401, code: 401002, msg: "does not grant ServiceConfig"},
		"fail/reader-links-hub":    {method: "DELETE", path: "/linkedHubs/hub1.azure-devices.net", headers: map[string]string{"Authorization": s.token("reader")}, status: 401, code: 401002, msg: "does not grant ServiceConfig"},
		"fail/reader-grants-self":  {method: "PUT", path: "/policies/reader", headers: map[string]string{"Authorization": s.token("reader"), "If-Match": "*"}, body: `{"rights": "ServiceConfig"}`, status: 401, code: 401002, msg: "does not grant ServiceConfig"},
		"fail/reader-settings":     {method: "PUT", path: "/settings", headers: map[string]string{"Authorization": s.token("reader")}, body: `{"allocationPolicy": "static"}`, status: 401, code: 401002, msg: "does not grant ServiceConfig"},
		"fail/big-body-no-auth":    {method: "PUT", path: "/enrollments/big", headers: map[string]string{"Authorization": ""}, body: tooBig, status: 401, code: 401002, msg: "Authorization"},
		"fail/reader-reads-policy": {method: "GET", path: "/policies/provisioningserviceowner", headers: map[string]string{"Authorization": s.token("reader")}, status: 401, code: 401002, msg: "does not grant ServiceConfig"},

		// Bulk operations.
		"fail/bulk-11-items":     {method: "POST", path: "/enrollments", body: bulk11, status: 400, code: 400004, msg: "10"},
		"fail/bulk-unknown-mode": {method: "POST", path: "/enrollments", body: `{"mode": "merge", "enrollments": [{"registrationId": "{id}", "attestation": {"type": "symmetricKey"}}]}`, status: 400, code: 400004, msg: `bulk mode "merge"`},
		"fail/bulk-no-mode":      {method: "POST", path: "/enrollmentGroups", body: `{"enrollmentGroups": [{"enrollmentGroupId": "{id}", "attestation": {"type": "symmetricKey"}}]}`, status: 400, code: 400004, msg: "bulk mode"},
		"fail/bulk-no-items":     {method: "POST", path: "/enrollmentGroups", body: `{"mode": "create"}`, status: 400, code: 400004, msg: "has no enrollmentGroups"},
		"fail/bulk-bad-key":      {method: "POST", path: "/enrollments", body: `{"mode": "create", "enrollments": [{"registrationId": "{id}", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "` + keyB64(10) + `"}}}]}`, status: 200, bulkCode: 400004, bulkMsg: "is 10 bytes"},
		"fail/bulk-exists":       {method: "POST", path: "/enrollments", body: `{"mode": "create", "enrollments": [{"registrationId": "existing", "attestation": {"type": "symmetricKey"}}]}`, status: 200, bulkCode: 409201, bulkMsg: "already exists"},
		"fail/bulk-stale-etag":   {method: "POST", path: "/enrollments", body: `{"mode": "updateIfMatchETag", "enrollments": [{"registrationId": "existing", "attestation": {"type": "symmetricKey"}, "etag": "\"0000\""}]}`, status: 200, bulkCode: 412001, bulkMsg: "does not match"},
		"fail/bulk-no-etag":      {method: "POST", path: "/enrollments", body: `{"mode": "updateIfMatchETag", "enrollments": [{"registrationId": "existing", "attestation": {"type": "symmetricKey"}}]}`, status: 200, bulkCode: 400004, bulkMsg: "has no etag"},
		"fail/bulk-delete-stale": {method: "POST", path: "/enrollmentGroups", body: `{"mode": "delete", "enrollmentGroups": [{"enrollmentGroupId": "grp", "etag": "\"0000\""}]}`, status: 200, bulkCode: 412001, bulkMsg: "does not match"},

		// Queries.
		"fail/query-where":            {method: "POST", path: "/enrollmentGroups/query", body: `{"query": "SELECT * FROM enrollmentGroups WHERE enrollmentGroupId = 'grp'"}`, status: 400, code: 400004, msg: "SELECT * only"},
		"fail/query-bad-token":        {method: "POST", path: "/enrollments/query", headers: map[string]string{"x-ms-continuation": "!!!"}, body: `{"query": "*"}`, status: 400, code: 400004, msg: "x-ms-continuation"},
		"fail/query-negative-size":    {method: "POST", path: "/enrollments/query", headers: map[string]string{"x-ms-max-item-count": "-1"}, body: `{"query": "*"}`, status: 400, code: 400004, msg: "x-ms-max-item-count"},
		"fail/registrations-bad-size": {method: "POST", path: "/registrations/grp/query", headers: map[string]string{"x-ms-max-item-count": "ten"}, status: 400, code: 400004, msg: "x-ms-max-item-count"},

		// The refusal journal.
		"fail/refusals-error-code":     {method: "GET", path: "/refusals?errorCode=401", status: 400, code: 400004, msg: "is not a six-digit DPS error code"},
		"fail/refusals-since":          {method: "GET", path: "/refusals?since=yesterday", status: 400, code: 400004, msg: `since "yesterday" is not an RFC 3339 time`},
		"fail/refusals-until":          {method: "GET", path: "/refusals?until=2025-13-01T00:00:00Z", status: 400, code: 400004, msg: "is not an RFC 3339 time"},
		"fail/refusals-empty-range":    {method: "GET", path: "/refusals?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z", status: 400, code: 400004, msg: "is not before until"},
		"fail/refusals-long-id":        {method: "GET", path: "/refusals?registrationId=" + strings.Repeat("x", 257), status: 400, code: 400004, msg: "at most 256"},
		"fail/refusals-bad-token":      {method: "GET", path: "/refusals", headers: map[string]string{"x-ms-continuation": "bm9uc2Vuc2U"}, status: 400, code: 400004, msg: "x-ms-continuation is not a token this server issued"},
		"fail/refusals-bad-size":       {method: "GET", path: "/refusals", headers: map[string]string{"x-ms-max-item-count": "-3"}, status: 400, code: 400004, msg: "x-ms-max-item-count"},
		"fail/registrar-reads-journal": {method: "GET", path: "/refusals", headers: map[string]string{"Authorization": s.token("registrar")}, status: 401, code: 401002, msg: "does not grant EnrollmentRead"},
		"fail/refusals-write":          {method: "DELETE", path: "/refusals", status: 405, code: 405000, msg: "not allowed"},

		// Linked hubs, policies, settings.
		"fail/hub-weight-0":              {method: "PUT", path: "/linkedHubs/hub1.azure-devices.net", headers: map[string]string{"If-Match": "*"}, body: `{"allocationWeight": 0}`, status: 400, code: 400004, msg: "outside 1 to 1000"},
		"fail/hub-weight-1001":           {method: "PUT", path: "/linkedHubs/hub2.azure-devices.net", body: `{"connectionString": "HostName=hub2.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=` + keyB64(32) + `", "allocationWeight": 1001}`, status: 400, code: 400004, msg: "outside 1 to 1000"},
		"fail/hub-connstr-garbage":       {method: "PUT", path: "/linkedHubs/hub2.azure-devices.net", body: `{"connectionString": "garbage"}`, status: 400, code: 400004, msg: "connectionString"},
		"fail/hub-connstr-key":           {method: "PUT", path: "/linkedHubs/hub2.azure-devices.net", body: `{"connectionString": "HostName=hub2.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=!!"}`, status: 400, code: 400004, msg: "not base64"},
		"fail/hub-connstr-other-hub":     {method: "PUT", path: "/linkedHubs/hub2.azure-devices.net", body: `{"connectionString": "HostName=hub1.azure-devices.net;SharedAccessKeyName=o;SharedAccessKey=` + keyB64(32) + `"}`, status: 400, code: 400004, msg: "is for"},
		"fail/hub-exists":                {method: "PUT", path: "/linkedHubs/hub1.azure-devices.net", body: `{"allocationWeight": 2}`, status: 409, code: 409201, msg: "already linked"},
		"fail/last-serviceconfig":        {method: "PUT", path: "/policies/provisioningserviceowner", headers: map[string]string{"If-Match": "*"}, body: `{"rights": "EnrollmentRead, EnrollmentWrite"}`, status: 400, code: 400004, msg: "last one with ServiceConfig"},
		"fail/delete-last-serviceconfig": {method: "DELETE", path: "/policies/provisioningserviceowner", status: 400, code: 400004, msg: "last one with ServiceConfig"},
		"fail/policy-unknown-right":      {method: "PUT", path: "/policies/{id}", body: `{"rights": "Root"}`, status: 400, code: 400004, msg: "unknown right Root"},
		"fail/policy-body-name":          {method: "PUT", path: "/policies/{id}", body: `{"keyName": "p2", "rights": "EnrollmentRead"}`, status: 400, code: 400004, msg: "does not match"},
		"fail/settings-custom":           {method: "PUT", path: "/settings", body: `{"allocationPolicy": "custom"}`, status: 400, code: 400004, msg: "custom is set per enrollment"},
		"fail/settings-idscope":          {method: "PATCH", path: "/settings", body: `{"idScope": "0ne00000000", "allocationPolicy": "static"}`, status: 400, code: 400004, msg: "cannot be changed"},
		"fail/settings-arm-shape":        {method: "PUT", path: "/settings", body: `{"properties": {"allocationPolicy": "static"}}`, status: 400, code: 400004, msg: "Azure Resource Manager's shape"},
		"fail/settings-unknown-member":   {method: "PATCH", path: "/settings", body: `{"allocationPolicy": "static", "retryAfter": 5}`, status: 400, code: 400004, msg: `"retryAfter" is not a setting`},
		"fail/settings-device-endpoint":  {method: "PUT", path: "/settings", body: `{"deviceProvisioningHostName": "evil.example:443"}`, status: 400, code: 400004, msg: `deviceProvisioningHostName "evil.example:443" cannot be set here`},
		"fail/verify-no-code":            {method: "POST", path: "/certificates/root-ca/verify", body: `{"certificate": ` + jsonString(fx["root"].PEM()) + `}`, status: 400, code: 400004, msg: "no verification code"},

		// Routing.
		"fail/unknown-route":  {method: "GET", path: "/enrollments/existing/registrations", status: 404, code: 404000, msg: "no service API operation"},
		"fail/wrong-method":   {method: "POST", path: "/enrollments/existing", body: validBody, status: 405, code: 405000, msg: "not allowed"},
		"fail/missing-record": {method: "DELETE", path: "/enrollments/missing", status: 404, code: 404201, msg: "not found"},
	}
}
