package serviceapi_test

// The enrollment and enrollment-group bodies Azure's own service clients
// send in their end-to-end tests (the Node, C#, Java, C and Python SDKs and
// the Azure CLI), which Azure DPS accepts. Each case sends the body as that
// client does, and the follow-ups it makes: a PUT-back of what it read
// with an edit and the If-Match spelling that client uses, the attestation
// mechanism, a delete. The rules they rest on:
//
//   - allocationPolicy static needs no iotHubs (the hub is decided when a
//     device registers); customAllocationDefinition is kept under any policy;
//     iotHubs may come without a policy.
//   - symmetric keys may be absent, {}, null or "": the service generates
//     them on create and keeps the stored ones on update.
//   - explicit null is accepted for every optional member, and read-only
//     members sent back (registrationState, etag, timestamps, certificate
//     info) and unknown members are ignored.
//   - an X.509 certificate may be given as PEM, base64 DER or base64 of the
//     PEM text, or on update by its info alone; an individual enrollment may
//     keep only a secondary certificate; a group's signing certificate need
//     not be a CA certificate.
//   - reprovisionPolicy is stored only when sent: devices of an enrollment
//     without one follow the default, except on legacy api-versions.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/issuance"
)

// Values of the placeholders of the bodies below.
const (
	shapeEK = "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAibym9HQP9vxCGF5dVc1QQsAGe021aUGJzNol1/gycBx3jFsTpwmWbISRwnFvflWd0w2Mc44FAAZNaJOAAxwZvG8GvyLlHh6fGKdh+mSBL4iLH2bZ4Ry22cB3CJVjXmdGoz9Y/j3/NwLndBxQC+baNvzvyVQZ4/A2YL7vzIIj2ik4y+ve9ir7U0GbNdnxskqK1KFIITVVtkTIYyyFTIR0BySjPrRIDj7r7Mh5uF9HBppGKQCBoVSVV8dI91lNazmSdpGWyqCkO7iM4VvUMv2HT/ym53aYlUrau+Qq87Tu+uQipWYgRdF11KDfcpMHqqzBQQ1NpOJVhrsTrhyJzO7KNw=="
	// 32 random bytes (C#, Python) and the 36 ASCII bytes of a UUID (Node).
	shapeK32   = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
	shapeKUUID = "ZjQ3YWMxMGItNThjYy00MzcyLWE1NjctMGUwMmIyYzNkNDc5"
	shapeHub   = "rk-cli-test-hub.azure-devices.net"
)

// absent marks a member that must not be in the answer.
const absent = "<absent>"

// nonEmpty marks a member that must be a non-empty string.
const nonEmpty = "<non-empty>"

// shapeStep is one request of a case. body may be "$created" (the answer
// to the case's first request, as clients PUT back what they read) or a
// JSON text with placeholders; edit then changes members of it.
type shapeStep struct {
	method  string // default PUT
	suffix  string // after the record's path, e.g. /attestationmechanism
	ifMatch string // "", "*", `"*"`, "etag" (the last answer's, raw) or `"etag"` (quoted)
	body    string
	edit    map[string]any // member path → value; absent deletes it
	status  int            // default 200 (204 for DELETE)
	want    map[string]any // member path → value, absent or nonEmpty
}

type shapeCase struct {
	name  string
	group bool
	steps []shapeStep
}

func TestAzureEnrollmentShapes(t *testing.T) {
	s := startServer(t)
	f := fixtures(t)
	// An uploaded, unverified CA certificate for caReferences.
	s.doJSON("PUT", "/certificates/uploaded-ca?api-version=2021-10-01", nil, map[string]any{"certificate": f["other"].B64PEM()}, 200, nil)
	// The issuing CA the certificate issuance preview's enrollments name:
	// the CA must exist, as in Azure, where that test creates it first.
	ca, err := issuance.Generate("ca-1", issuance.GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store.PutIssuingCA(context.Background(), ca, ""); err != nil {
		t.Fatal(err)
	}
	fill := strings.NewReplacer(
		"<EK>", shapeEK, "<K32>", shapeK32, "<KUUID>", shapeKUUID, "<hub>", shapeHub,
		"<PEM>", jsonText(f["self"].PEM()), "<PEM-TRIMMED>", jsonText(strings.TrimSpace(f["self"].PEM())),
		"<B64DER>", f["self"].B64DER(), "<B64PEM>", f["self"].B64PEM(),
		"<ROOT-PEM>", jsonText(f["root"].PEM()), "<ROOT-B64PEM>", f["root"].B64PEM(),
		"<INTERMEDIATE-PEM>", jsonText(f["intermediate"].PEM()),
	).Replace
	for _, c := range shapeCases {
		t.Run(c.name, func(t *testing.T) {
			id := strings.NewReplacer(" ", "-", "/", "-", ",", "", "(", "", ")", "", "+", "").Replace(c.name)
			path := "/enrollments/" + id
			if c.group {
				path = "/enrollmentGroups/" + id
			}
			var created, last map[string]any
			for i, st := range c.steps {
				method := st.method
				if method == "" {
					method = http.MethodPut
				}
				var body []byte
				switch {
				case st.body == "$created":
					body = []byte(fill(string(edited(t, created, st.edit))))
				case st.body != "":
					var m map[string]any
					if err := json.Unmarshal([]byte(fill(st.body)), &m); err != nil {
						t.Fatalf("step %d: the case's body is not JSON: %v", i, err)
					}
					if c.group {
						m["enrollmentGroupId"] = id
					} else {
						m["registrationId"] = id
					}
					body = []byte(fill(string(edited(t, m, st.edit))))
				}
				hdr := map[string]string{}
				switch st.ifMatch {
				case "etag":
					hdr["If-Match"] = str(last, "etag")
				case `"etag"`:
					hdr["If-Match"] = `"` + strings.Trim(str(last, "etag"), `"`) + `"`
				case "":
				default:
					hdr["If-Match"] = st.ifMatch
				}
				want := st.status
				if want == 0 {
					want = http.StatusOK
					if method == http.MethodDelete {
						want = http.StatusNoContent
					}
				}
				r := s.do(method, path+st.suffix+"?api-version=2021-10-01", hdr, body)
				if r.Status != want {
					t.Fatalf("step %d: %s %s: status %d, want %d: %s\nsent: %s", i, method, st.suffix, r.Status, want, r.Body, body)
				}
				if len(r.Body) == 0 {
					continue
				}
				var got map[string]any
				if err := json.Unmarshal(r.Body, &got); err != nil {
					t.Fatalf("step %d: answer is not a JSON object: %s", i, r.Body)
				}
				for p, v := range st.want {
					checkMember(t, fmt.Sprintf("step %d (%s%s)", i, method, st.suffix), got, p, v)
				}
				if i == 0 {
					created = got
				}
				if _, ok := got["etag"]; ok {
					last = got
				}
			}
		})
	}
}

// jsonText is s as the inside of a JSON string.
func jsonText(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

// edited returns m with the edits applied, as JSON (placeholders left as
// they are, for the caller to fill).
func edited(t *testing.T, m map[string]any, edit map[string]any) []byte {
	t.Helper()
	var c map[string]any
	b, _ := json.Marshal(m)
	json.Unmarshal(b, &c)
	for p, v := range edit {
		parts := strings.Split(p, ".")
		o := c
		for _, k := range parts[:len(parts)-1] {
			next, ok := o[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				o[k] = next
			}
			o = next
		}
		if v == absent {
			delete(o, parts[len(parts)-1])
		} else {
			o[parts[len(parts)-1]] = v
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func memberAt(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = o[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func str(m map[string]any, path string) string {
	v, _ := memberAt(m, path)
	s, _ := v.(string)
	return s
}

func checkMember(t *testing.T, what string, m map[string]any, path string, want any) {
	t.Helper()
	got, ok := memberAt(m, path)
	switch want {
	case absent:
		if ok {
			t.Errorf("%s: %s = %v, want it absent", what, path, got)
		}
		return
	case nonEmpty:
		if s, _ := got.(string); s == "" {
			t.Errorf("%s: %s = %v, want a non-empty string", what, path, got)
		}
		return
	}
	wb, _ := json.Marshal(want)
	gb, _ := json.Marshal(got)
	if !ok || string(wb) != string(gb) {
		t.Errorf("%s: %s = %s (present: %v), want %s", what, path, gb, ok, wb)
	}
}

// putBack is a client's update: the answer it read, edited, with its etag.
func putBack(ifMatch string, edit map[string]any, want map[string]any) shapeStep {
	return shapeStep{body: "$created", ifMatch: ifMatch, edit: edit, want: want}
}

var (
	getRecord = func(want map[string]any) shapeStep { return shapeStep{method: http.MethodGet, want: want} }
	mechanism = func(want map[string]any) shapeStep {
		return shapeStep{method: http.MethodPost, suffix: "/attestationmechanism", want: want}
	}
	deleteWith = func(ifMatch string) shapeStep { return shapeStep{method: http.MethodDelete, ifMatch: ifMatch} }
	disabled   = map[string]any{"provisioningStatus": "disabled"}
)

var shapeCases = []shapeCase{
	// Node (azure-iot-provisioning-service e2e): plain objects, raw etags.
	{name: "IE-01 node tpm custom edge", steps: []shapeStep{
		{body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "provisioningStatus": "enabled",
			"capabilities": {"iotEdge": true}, "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true},
			"allocationPolicy": "custom", "customAllocationDefinition": {"webhookUrl": "https://web.hook", "apiVersion": "2018-11-01"}}`,
			want: map[string]any{"allocationPolicy": "custom", "customAllocationDefinition.webhookUrl": "https://web.hook", "capabilities.iotEdge": true}},
		putBack("etag", disabled, disabled),
		mechanism(map[string]any{"type": "tpm", "tpm.endorsementKey": shapeEK}),
		deleteWith("etag"),
	}},
	{name: "IE-02 node symmetric key 36-byte keys hashed never reprovision", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<KUUID>", "secondaryKey": "<KUUID>"}},
			"provisioningStatus": "enabled", "reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": false}, "allocationPolicy": "hashed"}`,
			want: map[string]any{"attestation.symmetricKey.primaryKey": shapeKUUID, "reprovisionPolicy.updateHubAssignment": false}},
		putBack("etag", disabled, disabled),
		mechanism(map[string]any{"type": "symmetricKey", "symmetricKey.secondaryKey": shapeKUUID}),
	}},
	{name: "IE-03 node tpm edge without policy", steps: []shapeStep{
		{body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "provisioningStatus": "enabled", "capabilities": {"iotEdge": true}}`,
			want: map[string]any{"allocationPolicy": absent, "reprovisionPolicy": absent}},
	}},
	{name: "IE-04 node x509 self-signed device id desired twin", steps: []shapeStep{
		{body: `{"deviceId": "deleteme_provisioning_node_e2e_1", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}}}},
			"initialTwin": {"properties": {"desired": {"testProp": "0a1b"}}}}`,
			want: map[string]any{"deviceId": "deleteme_provisioning_node_e2e_1", "initialTwin": map[string]any{"properties": map[string]any{"desired": map[string]any{"testProp": "0a1b"}}},
				"attestation.x509.clientCertificates.primary.info.subjectName": nonEmpty, "attestation.x509.clientCertificates.primary.certificate": absent}},
	}},
	{name: "IE-06 node 2017 preview initialTwinState", steps: []shapeStep{
		{body: `{"deviceId": "deleteme_2017", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}}}},
			"initialTwinState": {"desiredProperties": {"testProp": "x"}}}`, want: map[string]any{"initialTwinState": absent}},
	}},
	{name: "IE-28 c sdk x509 base64 of pem", steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<B64PEM>"}}}}, "provisioningStatus": "enabled"}`,
			want: map[string]any{"attestation.x509.clientCertificates.primary.info.subjectName": nonEmpty}},
		deleteWith(""),
	}},

	// C# v1: quoted If-Match, PUT-back of everything it read.
	{name: "IE-07 csharp tpm hashed put-back", steps: []shapeStep{
		{body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "allocationPolicy": "hashed"}`},
		putBack(`"etag"`, map[string]any{"attestation": map[string]any{"type": "tpm", "tpm": map[string]any{"endorsementKey": shapeEK}}},
			map[string]any{"provisioningStatus": "enabled", "allocationPolicy": "hashed"}),
		getRecord(map[string]any{"provisioningStatus": "enabled", "allocationPolicy": "hashed"}),
	}},
	{name: "IE-08 csharp tpm static without hubs", steps: []shapeStep{
		{body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "allocationPolicy": "static"}`,
			want: map[string]any{"allocationPolicy": "static", "iotHubs": absent}},
		mechanism(map[string]any{"tpm.endorsementKey": shapeEK, "tpm.storageRootKey": absent}),
	}},
	{name: "IE-09 csharp symmetric key hashed", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}}, "allocationPolicy": "hashed"}`},
		getRecord(map[string]any{"provisioningStatus": "enabled", "allocationPolicy": "hashed", "attestation.symmetricKey": absent}),
	}},
	{name: "IE-10 csharp symmetric key static without hubs", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}}, "allocationPolicy": "static"}`},
		mechanism(map[string]any{"symmetricKey.primaryKey": shapeK32, "symmetricKey.secondaryKey": shapeK32}),
	}},
	{name: "IE-11 csharp geoLatency with a custom allocation definition", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}},
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false},
			"customAllocationDefinition": {"webhookUrl": "https://www.microsoft.com", "apiVersion": "2019-03-31"}, "allocationPolicy": "geoLatency"}`},
		getRecord(map[string]any{"allocationPolicy": "geoLatency", "customAllocationDefinition.webhookUrl": "https://www.microsoft.com",
			"customAllocationDefinition.apiVersion": "2019-03-31", "reprovisionPolicy.migrateDeviceData": false}),
	}},
	{name: "IE-12 csharp v2 update and force update with hidden keys", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}}, "allocationPolicy": "hashed"}`},
		putBack(`"etag"`, map[string]any{"attestation.symmetricKey": map[string]any{"primaryKey": "", "secondaryKey": ""}, "capabilities": map[string]any{"iotEdge": true}},
			map[string]any{"capabilities.iotEdge": true, "provisioningStatus": "enabled", "attestation.symmetricKey.primaryKey": shapeK32}),
		putBack("*", map[string]any{"attestation.symmetricKey": map[string]any{}, "etag": "*"}, map[string]any{"attestation.symmetricKey.primaryKey": shapeK32}),
		putBack(`"*"`, map[string]any{"attestation.symmetricKey": absent}, map[string]any{"attestation.symmetricKey.secondaryKey": shapeK32}),
	}},
	{name: "IE-13 csharp x509 base64 der hashed with a hub", steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<B64DER>"}}}},
			"capabilities": {"iotEdge": false}, "allocationPolicy": "hashed", "iotHubs": ["<hub>"]}`,
			want: map[string]any{"iotHubs": []any{shapeHub}}},
	}},
	{name: "IE-14 csharp reprovisioning put-back with an assigned registration state", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}},
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false}, "allocationPolicy": "hashed", "iotHubs": ["far-away.azure-devices.net"]}`},
		putBack(`"etag"`, map[string]any{
			"registrationState": map[string]any{"registrationId": "x", "createdDateTimeUtc": "2023-05-09T20:31:21.6620975Z", "assignedHub": "far-away.azure-devices.net",
				"deviceId": "x", "status": "assigned", "substatus": "initialAssignment", "etag": "IjIwMDFlZmEzIg=="},
			"attestation.symmetricKey": map[string]any{"primaryKey": "", "secondaryKey": ""}, "iotHubs": []any{shapeHub}},
			map[string]any{"iotHubs": []any{shapeHub}, "attestation.symmetricKey.primaryKey": shapeK32, "registrationState": absent}),
	}},

	// Java: Gson, capabilities and both reprovision flags always sent.
	{name: "IE-15 java empty keys", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}, "capabilities": {"iotEdge": false}}`},
		mechanism(map[string]any{"symmetricKey.primaryKey": nonEmpty, "symmetricKey.secondaryKey": nonEmpty}),
	}},
	{name: "IE-16 java x509", steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}}}}, "capabilities": {"iotEdge": false}}`},
		mechanism(map[string]any{"x509.clientCertificates.primary.info.subjectName": nonEmpty}),
	}},
	{name: "IE-17 java geoLatency edge without hubs", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}, "capabilities": {"iotEdge": true},
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}, "allocationPolicy": "geoLatency"}`,
			want: map[string]any{"capabilities.iotEdge": true, "reprovisionPolicy.updateHubAssignment": true, "attestation.type": "symmetricKey", "allocationPolicy": "geoLatency"}},
	}},
	{name: "IE-18 java hubs without a policy then moved", steps: []shapeStep{
		{body: `{"deviceId": "Some-Provisioned-Device-SYMMETRIC_KEY-1", "attestation": {"type": "symmetricKey", "symmetricKey": {}},
			"initialTwin": {"tags": {"testTag": "testValue"}, "properties": {"desired": {"testDP": "testDPValue"}}},
			"reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": true}, "iotHubs": ["far-away.azure-devices.net"]}`,
			want: map[string]any{"deviceId": "Some-Provisioned-Device-SYMMETRIC_KEY-1", "initialTwin.tags.testTag": "testValue",
				"initialTwin.properties.desired.testDP": "testDPValue", "attestation.symmetricKey.primaryKey": nonEmpty}},
		putBack("etag", map[string]any{"iotHubs": []any{shapeHub}}, map[string]any{"iotHubs": []any{shapeHub}, "allocationPolicy": absent}),
	}},
	{name: "IE-18 java custom allocation with two hubs", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {}}, "capabilities": {"iotEdge": false}, "allocationPolicy": "custom",
			"customAllocationDefinition": {"apiVersion": "2018-11-01", "webhookUrl": "https://alloc.example/api/alloc?code=secret"},
			"iotHubs": ["far-away.azure-devices.net", "<hub>"]}`, want: map[string]any{"iotHubs": []any{"far-away.azure-devices.net", shapeHub}}},
	}},

	// Python SDK (recorded against Azure): every member, null when unset.
	{name: "IE-19 python tpm static without hubs explicit nulls", steps: []shapeStep{
		{body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "allocationPolicy": "static", "capabilities": null,
			"reprovisionPolicy": null, "customAllocationDefinition": null, "provisioningStatus": "enabled", "deviceId": "device_90d74051",
			"optionalDeviceInformation": null, "iotHubs": null, "iotHubHostName": null, "initialTwin": null}`,
			want: map[string]any{"allocationPolicy": "static", "deviceId": "device_90d74051", "reprovisionPolicy": absent, "iotHubs": absent,
				"initialTwin": absent, "customAllocationDefinition": absent, "optionalDeviceInformation": absent}},
		getRecord(map[string]any{"attestation.tpm.endorsementKey": shapeEK}),
		mechanism(map[string]any{"type": "tpm", "tpm.endorsementKey": shapeEK}),
		{body: `{"attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "allocationPolicy": "static", "capabilities": null,
			"reprovisionPolicy": null, "customAllocationDefinition": null, "provisioningStatus": "disabled", "deviceId": "device_90d74051",
			"optionalDeviceInformation": {"additionalProperties": {"hello": "world"}}, "iotHubs": null, "iotHubHostName": null, "initialTwin": null}`,
			ifMatch: "etag", want: map[string]any{"provisioningStatus": "disabled", "optionalDeviceInformation.additionalProperties.hello": "world"}},
		deleteWith("etag"),
	}},
	{name: "IE-20 python x509 primary and secondary the same", steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM-TRIMMED>"}, "secondary": {"certificate": "<PEM-TRIMMED>"}}}},
			"allocationPolicy": "hashed", "capabilities": null, "reprovisionPolicy": {"migrateDeviceData": true, "updateHubAssignment": true},
			"customAllocationDefinition": null, "provisioningStatus": "enabled", "deviceId": "x509_device_c63f4016", "optionalDeviceInformation": null,
			"iotHubs": null, "iotHubHostName": null, "initialTwin": null}`,
			want: map[string]any{"attestation.x509.clientCertificates.primary.info.subjectName": nonEmpty,
				"attestation.x509.clientCertificates.secondary.info.sha256Thumbprint": nonEmpty, "attestation.x509.clientCertificates.primary.certificate": absent}},
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM-TRIMMED>"}, "secondary": {"certificate": "<PEM-TRIMMED>"}}}},
			"allocationPolicy": "custom", "capabilities": null, "reprovisionPolicy": {"migrateDeviceData": true, "updateHubAssignment": true},
			"customAllocationDefinition": {"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"}, "provisioningStatus": "disabled",
			"deviceId": "x509_device_c63f4016", "optionalDeviceInformation": null, "iotHubs": null, "iotHubHostName": null, "initialTwin": null}`,
			ifMatch: "etag", want: map[string]any{"allocationPolicy": "custom", "customAllocationDefinition.webhookUrl": "https://www.test.test"}},
	}},
	{name: "IE-21 python symmetric key geoLatency twin status null", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}}, "allocationPolicy": "geoLatency",
			"capabilities": null, "reprovisionPolicy": {"migrateDeviceData": true, "updateHubAssignment": true}, "customAllocationDefinition": null,
			"provisioningStatus": null, "deviceId": "sym_key_device_f1404426", "optionalDeviceInformation": null, "iotHubs": null, "iotHubHostName": null,
			"initialTwin": {"properties": {"desired": {"key": "value"}}}}`,
			want: map[string]any{"initialTwin": map[string]any{"properties": map[string]any{"desired": map[string]any{"key": "value"}}},
				"attestation.symmetricKey.primaryKey": shapeK32}},
		getRecord(map[string]any{"attestation": map[string]any{"type": "symmetricKey"}}),
	}},
	{name: "IE-22 python null keys custom", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": null, "secondaryKey": null}}, "allocationPolicy": "custom",
			"capabilities": null, "reprovisionPolicy": null, "customAllocationDefinition": {"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"},
			"provisioningStatus": null, "deviceId": null, "optionalDeviceInformation": null, "iotHubs": null, "iotHubHostName": null, "initialTwin": null}`,
			want: map[string]any{"attestation.symmetricKey.primaryKey": nonEmpty, "attestation.symmetricKey.secondaryKey": nonEmpty,
				"customAllocationDefinition.apiVersion": "2019-03-31", "reprovisionPolicy": absent}},
	}},
	{name: "IE-23 python device e2e attestation without a symmetricKey object", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey"}, "provisioningStatus": "enabled", "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}}`,
			want: map[string]any{"attestation.symmetricKey.primaryKey": nonEmpty}},
	}},
	{name: "IE-23 python preview certificate issuance policy", steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}}}}, "deviceId": "e2edpsthunderbolt",
			"clientCertificateIssuancePolicy": {"certificateAuthorityName": "ca-1"}}`,
			want: map[string]any{"clientCertificateIssuancePolicy.certificateAuthorityName": "ca-1", "credentialPolicyName": "ca-1"}},
	}},

	// Azure CLI: capabilities, reprovisionPolicy and empty twin objects always.
	{name: "IE-24 cli tpm static with a hub twin and device information", steps: []shapeStep{
		{body: `{"deviceId": "cli-device", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "<EK>"}}, "capabilities": {"iotEdge": false},
			"initialTwin": {"tags": {"r4nd": "v4l", "key": "value"}, "properties": {"desired": {"r4nd": "v4l", "key": "value"}}},
			"provisioningStatus": "enabled", "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true},
			"allocationPolicy": "static", "iotHubs": ["<hub>"], "optionalDeviceInformation": {"r4nd": "v4l", "key": "value"}}`,
			want: map[string]any{"allocationPolicy": "static", "iotHubs": []any{shapeHub}, "initialTwin.tags.r4nd": "v4l", "optionalDeviceInformation.key": "value"}},
		putBack("etag", disabled, map[string]any{"provisioningStatus": "disabled", "optionalDeviceInformation.key": "value"}),
	}},
	{name: "IE-25 cli x509 update removes the primary certificate", steps: []shapeStep{
		{body: `{"deviceId": "cli-x509", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}, "secondary": {"certificate": "<PEM>"}}}},
			"capabilities": {"iotEdge": false}, "initialTwin": {"tags": {"a": "b"}, "properties": {"desired": {"c": "d"}}}, "provisioningStatus": "enabled",
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}, "allocationPolicy": "hashed", "iotHubs": ["<hub>"], "optionalDeviceInformation": {}}`},
		putBack("etag", map[string]any{"provisioningStatus": "disabled", "attestation.x509.clientCertificates.primary": absent},
			map[string]any{"attestation.x509.clientCertificates.primary": absent, "attestation.x509.clientCertificates.secondary.info.subjectName": nonEmpty,
				"provisioningStatus": "disabled", "initialTwin.tags.a": "b"}),
		mechanism(map[string]any{"x509.clientCertificates.primary": absent, "x509.clientCertificates.secondary.info.subjectName": nonEmpty}),
	}},
	{name: "IE-26 cli symmetric key geoLatency updated to custom", steps: []shapeStep{
		{body: `{"deviceId": "cli-sym", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}},
			"capabilities": {"iotEdge": true}, "initialTwin": {"tags": {"a": "b"}, "properties": {"desired": {"c": "d"}}}, "provisioningStatus": "enabled",
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false}, "allocationPolicy": "geoLatency", "iotHubs": ["<hub>"],
			"optionalDeviceInformation": {"k": "v"}}`},
		putBack("etag", map[string]any{"provisioningStatus": "disabled", "capabilities": map[string]any{"iotEdge": false}, "allocationPolicy": "custom",
			"customAllocationDefinition": map[string]any{"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"}},
			map[string]any{"allocationPolicy": "custom", "iotHubs": []any{shapeHub}, "capabilities.iotEdge": false, "customAllocationDefinition.apiVersion": "2019-03-31"}),
	}},
	{name: "IE-26 cli service-generated keys custom empty twin", steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {}}, "capabilities": {"iotEdge": false},
			"initialTwin": {"tags": {}, "properties": {"desired": {}}}, "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true},
			"allocationPolicy": "custom", "customAllocationDefinition": {"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"}, "optionalDeviceInformation": {}}`,
			want: map[string]any{"attestation.symmetricKey.primaryKey": nonEmpty, "allocationPolicy": "custom"}},
	}},
	{name: "IE-27 cli twin with an array of objects", steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "<PEM>"}, "secondary": {"certificate": "<PEM>"}}}},
			"initialTwin": {"tags": {"a": "b"}, "properties": {"desired": {"values": [{"key1": "value1"}, {"key2": "value2"}]}}}, "allocationPolicy": "hashed", "iotHubs": ["<hub>"]}`,
			want: map[string]any{"initialTwin.properties.desired": map[string]any{"values": []any{map[string]any{"key1": "value1"}, map[string]any{"key2": "value2"}}}}},
	}},

	// Enrollment groups.
	{name: "EG-01 node x509 signing certificate geoLatency put-back by info", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<ROOT-PEM>"}}}}, "provisioningStatus": "enabled",
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false}, "allocationPolicy": "geoLatency"}`,
			want: map[string]any{"attestation.x509.signingCertificates.primary.certificate": absent, "attestation.x509.signingCertificates.primary.info.subjectName": nonEmpty}},
		putBack("etag", disabled, map[string]any{"provisioningStatus": "disabled", "attestation.x509.signingCertificates.primary.info.subjectName": nonEmpty}),
		mechanism(map[string]any{"type": "x509"}),
	}},
	{name: "EG-02 node symmetric key static without hubs", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<KUUID>", "secondaryKey": "<KUUID>"}}, "provisioningStatus": "enabled",
			"reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": true}, "allocationPolicy": "static"}`,
			want: map[string]any{"allocationPolicy": "static", "iotHubs": absent}},
		putBack("etag", disabled, disabled),
		mechanism(map[string]any{"type": "symmetricKey"}),
		deleteWith("etag"),
	}},
	{name: "EG-03 node x509 without policies", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<ROOT-PEM>"}}}}, "provisioningStatus": "enabled"}`,
			want: map[string]any{"reprovisionPolicy": absent, "allocationPolicy": absent}},
	}},
	{name: "EG-04 node x509 base64 of pem after deleting a missing group", group: true, steps: []shapeStep{
		{method: http.MethodDelete, status: http.StatusNotFound},
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<ROOT-B64PEM>"}}}},
			"initialTwin": {"properties": {"desired": {"testProp": "0a1b"}}}}`, want: map[string]any{"initialTwin.properties.desired.testProp": "0a1b"}},
	}},
	{name: "EG-05 node symmetric key group twin", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<KUUID>", "secondaryKey": "<KUUID>"}}, "provisioningStatus": "enabled",
			"initialTwin": {"properties": {"desired": {"testProp": "0a1b"}}}}`},
	}},
	{name: "EG-06 csharp ProvisioningServiceClientE2ETests_symmetrickey static", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}}, "allocationPolicy": "static"}`},
		getRecord(map[string]any{"provisioningStatus": "enabled", "allocationPolicy": "static"}),
		putBack(`"*"`, map[string]any{"capabilities": map[string]any{"iotEdge": true}, "attestation.symmetricKey": map[string]any{"primaryKey": "", "secondaryKey": ""}},
			map[string]any{"capabilities.iotEdge": true, "attestation.symmetricKey.primaryKey": shapeK32}),
	}},
	{name: "EG-06 csharp geoLatency with a custom allocation definition", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "<K32>", "secondaryKey": "<K32>"}},
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": false}, "allocationPolicy": "geoLatency",
			"customAllocationDefinition": {"webhookUrl": "https://www.microsoft.com", "apiVersion": "2019-03-31"}}`},
		getRecord(map[string]any{"customAllocationDefinition.webhookUrl": "https://www.microsoft.com", "reprovisionPolicy.migrateDeviceData": false}),
	}},
	{name: "EG-07 java empty keys custom edge", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}}, "capabilities": {"iotEdge": true},
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}, "allocationPolicy": "custom",
			"customAllocationDefinition": {"webhookUrl": "https://alloc.example/api/alloc?code=k", "apiVersion": "2018-09-01-preview"}}`,
			want: map[string]any{"customAllocationDefinition.apiVersion": "2018-09-01-preview", "capabilities.iotEdge": true}},
		mechanism(map[string]any{"symmetricKey.primaryKey": nonEmpty, "symmetricKey.secondaryKey": nonEmpty}),
	}},
	{name: "EG-08 java symmetric key object empty", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {}}, "initialTwin": {"tags": {"testTag": "testValue"}, "properties": {"desired": {"testDP": "testDPValue"}}},
			"iotHubs": ["far-away.azure-devices.net"]}`, want: map[string]any{"attestation.symmetricKey.primaryKey": nonEmpty}},
		putBack("etag", map[string]any{"iotHubs": []any{shapeHub}}, map[string]any{"iotHubs": []any{shapeHub}}),
	}},
	{name: "EG-09 python non-CA self-signed signing certificate", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<PEM-TRIMMED>"}, "secondary": {"certificate": "<PEM-TRIMMED>"}}}},
			"allocationPolicy": "hashed", "capabilities": null, "provisioningStatus": "enabled", "reprovisionPolicy": {"migrateDeviceData": true, "updateHubAssignment": true},
			"iotHubs": null, "iotHubHostName": null, "initialTwin": null, "customAllocationDefinition": null}`,
			want: map[string]any{"attestation.x509.signingCertificates.secondary.info.subjectName": nonEmpty}},
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<PEM-TRIMMED>"}, "secondary": {"certificate": "<PEM-TRIMMED>"}}}},
			"allocationPolicy": "custom", "capabilities": null, "provisioningStatus": "disabled", "reprovisionPolicy": {"migrateDeviceData": true, "updateHubAssignment": true},
			"iotHubs": null, "iotHubHostName": null, "initialTwin": null, "customAllocationDefinition": {"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"}}`,
			ifMatch: "etag", want: map[string]any{"allocationPolicy": "custom", "provisioningStatus": "disabled"}},
		deleteWith("etag"),
	}},
	{name: "EG-10 python null keys custom", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": null, "secondaryKey": null}}, "allocationPolicy": "custom", "capabilities": null,
			"provisioningStatus": null, "reprovisionPolicy": null, "iotHubs": null, "iotHubHostName": null, "initialTwin": null,
			"customAllocationDefinition": {"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"}}`,
			want: map[string]any{"attestation.symmetricKey.primaryKey": nonEmpty}},
	}},
	{name: "EG-11 python static without hubs null keys", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": null, "secondaryKey": null}}, "allocationPolicy": "static", "capabilities": null,
			"provisioningStatus": null, "reprovisionPolicy": null, "iotHubs": null, "iotHubHostName": null, "initialTwin": null, "customAllocationDefinition": null}`,
			want: map[string]any{"allocationPolicy": "static", "attestation.symmetricKey.primaryKey": nonEmpty, "reprovisionPolicy": absent}},
	}},
	{name: "EG-12 python intermediate signing certificate", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<INTERMEDIATE-PEM>"}}}}, "provisioningStatus": "enabled",
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}}`},
	}},
	{name: "EG-13 cli x509 group updated by info then to a CA reference", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": "<PEM>"}, "secondary": {"certificate": "<PEM>"}}}},
			"capabilities": {"iotEdge": true}, "initialTwin": {"tags": {}, "properties": {"desired": {}}}, "provisioningStatus": "enabled",
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}, "allocationPolicy": "geoLatency", "iotHubs": ["<hub>"]}`},
		putBack("etag", map[string]any{"provisioningStatus": "disabled", "attestation.x509.signingCertificates.secondary": map[string]any{"certificate": "<PEM>"},
			"reprovisionPolicy": map[string]any{"updateHubAssignment": false, "migrateDeviceData": false}, "allocationPolicy": "hashed", "capabilities": map[string]any{"iotEdge": false}},
			map[string]any{"reprovisionPolicy.updateHubAssignment": false, "allocationPolicy": "hashed", "attestation.x509.clientCertificates": absent}),
		putBack("etag", map[string]any{"attestation.x509": map[string]any{"caReferences": map[string]any{"primary": "uploaded-ca"}}, "allocationPolicy": "custom",
			"customAllocationDefinition": map[string]any{"webhookUrl": "https://www.test.test", "apiVersion": "2019-03-31"}},
			map[string]any{"attestation.x509.caReferences.primary": "uploaded-ca", "attestation.x509.caReferences.secondary": absent, "attestation.x509.signingCertificates": absent}),
	}},
	{name: "EG-13 cli group with no arguments", group: true, steps: []shapeStep{
		{body: `{"attestation": {"type": "symmetricKey", "symmetricKey": {}}, "capabilities": {"iotEdge": false}, "initialTwin": {"tags": {}, "properties": {"desired": {}}},
			"reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": true}}`, want: map[string]any{"attestation.symmetricKey.primaryKey": nonEmpty}},
	}},
}

// TestAzureBulkAndQueryShapes: the bulk operations and queries of the same
// suites: C# v2 creates with {} keys and IDs with upper case and "__",
// updates with what it read, deletes; Python creates, and queries with
// SELECT * and the registration-state query without a body.
func TestAzureBulkAndQueryShapes(t *testing.T) {
	s := startServer(t)
	var res map[string]any
	s.doJSON("POST", "/enrollments?api-version=2021-10-01", nil, map[string]any{"mode": "create", "enrollments": []any{
		map[string]any{"registrationId": "ProvisioningServiceIndividualEnrollmentTests__1", "attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{}}},
		map[string]any{"registrationId": "ind_enroll_tpm_56f45ca", "attestation": map[string]any{"type": "tpm", "tpm": map[string]any{"endorsementKey": shapeEK}},
			"allocationPolicy": "static", "capabilities": nil, "reprovisionPolicy": nil, "iotHubs": nil, "iotHubHostName": nil, "initialTwin": nil},
	}}, 200, &res)
	checkMember(t, "bulk create", res, "isSuccessful", true)
	var read map[string]any
	s.doJSON("GET", "/enrollments/ProvisioningServiceIndividualEnrollmentTests__1?api-version=2021-10-01", nil, nil, 200, &read)
	read["capabilities"] = map[string]any{"iotEdge": true}
	s.doJSON("POST", "/enrollments?api-version=2021-10-01", nil, map[string]any{"mode": "update", "enrollments": []any{read}}, 200, &res)
	checkMember(t, "bulk update", res, "isSuccessful", true)
	s.doJSON("GET", "/enrollments/ProvisioningServiceIndividualEnrollmentTests__1?api-version=2021-10-01", nil, nil, 200, &read)
	checkMember(t, "after the bulk update", read, "capabilities.iotEdge", true)

	var groupRes map[string]any
	s.doJSON("POST", "/enrollmentGroups?api-version=2021-10-01", nil, map[string]any{"mode": "create", "enrollmentGroups": []any{
		map[string]any{"enrollmentGroupId": "ProvisioningServiceEnrollmentGroupTests__1", "attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{}}},
		map[string]any{"enrollmentGroupId": "sym_enroll_grp_1", "allocationPolicy": "static", "attestation": map[string]any{"type": "symmetricKey", "symmetricKey": map[string]any{"primaryKey": nil}}},
	}}, 200, &groupRes)
	checkMember(t, "bulk group create", groupRes, "isSuccessful", true)

	for _, q := range []struct{ path, query, itemType string }{
		{"/enrollments/query", "SELECT * FROM enrollments", "Enrollment"},
		{"/enrollmentGroups/query", "SELECT * FROM enrollmentGroups", "EnrollmentGroup"},
	} {
		r := s.doJSON("POST", q.path+"?api-version=2021-10-01", nil, map[string]any{"query": q.query}, 200, nil)
		if got := r.Header.Get("x-ms-item-type"); got != q.itemType {
			t.Errorf("%s: x-ms-item-type %q, want %q", q.path, got, q.itemType)
		}
	}
	r := s.do("POST", "/registrations/sym_enroll_grp_1/query?api-version=2021-10-01", map[string]string{"Content-Type": ""}, nil)
	if r.Status != 200 || strings.TrimSpace(string(r.Body)) != "[]" {
		t.Errorf("registration-state query without a body: %d %s, want 200 []", r.Status, r.Body)
	}

	s.doJSON("POST", "/enrollments?api-version=2021-10-01", nil, map[string]any{"mode": "delete", "enrollments": []any{read}}, 200, &res)
	checkMember(t, "bulk delete", res, "isSuccessful", true)
}
