package e2e_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/testutil"
	"github.com/dpsd/dpsd/test/e2e"
)

// The official Node.js service SDK (azure-iot-provisioning-service 1.11.2)
// against the real dpsd binary. Each scenario of test/node/service-sdk.js
// runs against its own server; the script prints every step with the SDK's
// result or error, and the tests below assert on them.

// nodeStep is one step printed by service-sdk.js.
type nodeStep struct {
	Step    string            `json:"step"`
	OK      bool              `json:"ok"`
	Status  int               `json:"status"`
	Result  json.RawMessage   `json:"result"`
	Headers map[string]string `json:"headers"`
	Error   *e2e.NodeError    `json:"error"`
}

type scenarioRun struct {
	t     *testing.T
	steps []nodeStep
	byKey map[string]*nodeStep
}

// runScenario starts a server and runs one scenario of service-sdk.js.
func runScenario(t *testing.T, scenario string, env map[string]string) *scenarioRun {
	t.Helper()
	s := e2e.StartServer(t)
	all := s.NodeEnv()
	for k, v := range env {
		all[k] = v
	}
	return parseScenario(t, e2e.RunNode(t, "service-sdk.js "+scenario, all))
}

func parseScenario(t *testing.T, out string) *scenarioRun {
	t.Helper()
	var doc struct {
		Steps []nodeStep `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("the script's output is not JSON: %v\n%s", err, out)
	}
	r := &scenarioRun{t: t, steps: doc.Steps, byKey: map[string]*nodeStep{}}
	for i := range r.steps {
		r.byKey[r.steps[i].Step] = &r.steps[i]
	}
	return r
}

func (r *scenarioRun) step(name string) *nodeStep {
	r.t.Helper()
	s, ok := r.byKey[name]
	if !ok {
		var names []string
		for _, st := range r.steps {
			names = append(names, st.Step)
		}
		r.t.Fatalf("the script did not run step %q (steps: %s)", name, strings.Join(names, ", "))
	}
	return s
}

// deleted is the status ok expects of a delete: the SDK's delete methods
// call back with the error alone, so a successful delete shows no status.
const deleted = 0

// ok returns the result of a step that must have succeeded with status.
func (r *scenarioRun) ok(name string, status int) map[string]any {
	r.t.Helper()
	s := r.step(name)
	if !s.OK {
		r.t.Fatalf("step %s failed: %s (HTTP %d) %s", name, s.Error.Name, s.Error.StatusCode, s.Error.Body)
	}
	if s.Status != status {
		r.t.Errorf("step %s: HTTP %d, want %d", name, s.Status, status)
	}
	var m map[string]any
	if len(s.Result) > 0 && string(s.Result) != "null" && string(s.Result) != `""` {
		if err := json.Unmarshal(s.Result, &m); err != nil {
			r.t.Fatalf("step %s: result is not an object: %s", name, s.Result)
		}
	}
	return m
}

// failed checks that a step failed with the SDK error errName and status.
func (r *scenarioRun) failed(name, errName string, status int) {
	r.t.Helper()
	s := r.step(name)
	switch {
	case s.OK:
		r.t.Errorf("step %s succeeded (HTTP %d: %s), want %s (HTTP %d)", name, s.Status, s.Result, errName, status)
	case s.Error.StatusCode != status || s.Error.Name != errName:
		r.t.Errorf("step %s: %s (HTTP %d), want %s (HTTP %d); body %s", name, s.Error.Name, s.Error.StatusCode, errName, status, s.Error.Body)
	}
}

// get walks a JSON object along a dotted path.
func get(m map[string]any, path string) any {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[k]
	}
	return v
}

func str(m map[string]any, path string) string {
	s, _ := get(m, path).(string)
	return s
}

// checkGeneratedKey checks a key the server made: base64 of 64 bytes.
func checkGeneratedKey(t *testing.T, what, k string) {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(k)
	if err != nil || len(b) != 64 {
		t.Errorf("%s %q is not base64 of 64 bytes", what, k)
	}
}

// certs makes a CA, an intermediate and a device certificate for the X.509
// scenarios.
func certs(t *testing.T) (signing, device string, signingSHA256, deviceSHA256 string) {
	t.Helper()
	inter := testutil.NewRoot(t, pki.Options{CommonName: "e2e-root"}).Intermediate(t, pki.Options{CommonName: "e2e-intermediate"})
	dev, _ := inter.Leaf(t, pki.Options{CommonName: "node-x509-1"})
	return string(pki.EncodePEM(inter.Cert)), string(pki.EncodePEM(dev)), pki.SHA256Thumbprint(inter.Cert), pki.SHA256Thumbprint(dev)
}

// x509Lifecycle runs an X.509 scenario of service-sdk.js on a new
// certificate chain and checks its lifecycle (checkLifecycle); it returns
// the answers and the thumbprints of the signing and device certificates.
func x509Lifecycle(t *testing.T, scenario, idField, id string) (created, got, am map[string]any, signingSHA, deviceSHA string) {
	t.Helper()
	signing, device, signingSHA, deviceSHA := certs(t)
	r := runScenario(t, scenario, map[string]string{"DPS_DEVICE_CERT": device, "DPS_SIGNING_CERT": signing})
	created, got, am = checkLifecycle(t, r, idField, id)
	return created, got, am, signingSHA, deviceSHA
}

// checkLifecycle asserts the common steps of the individual and group
// scenarios (see service-sdk.js individual()): the etag changes on every
// write, a stale etag is InvalidEtagError (412), a second create is
// DeviceAlreadyExistsError (409), a deleted record is gone (404).
func checkLifecycle(t *testing.T, r *scenarioRun, idField, id string) (created, got, am map[string]any) {
	t.Helper()
	created = r.ok("create", 200)
	if str(created, idField) != id {
		t.Errorf("create returned %s %q, want %q", idField, str(created, idField), id)
	}
	etag := str(created, "etag")
	if etag == "" || str(created, "createdDateTimeUtc") == "" {
		t.Errorf("create returned no etag or createdDateTimeUtc: %v", created)
	}
	got = r.ok("get", 200)
	if str(got, "etag") != etag {
		t.Errorf("get etag %q, create etag %q", str(got, "etag"), etag)
	}
	am = r.ok("attestationMechanism", 200)
	if am["type"] != get(created, "attestation.type") {
		t.Errorf("attestation mechanism type %v, enrollment %v", am["type"], get(created, "attestation.type"))
	}
	updated := r.ok("update", 200)
	if str(updated, "etag") == "" || str(updated, "etag") == etag {
		t.Errorf("update etag %q, before %q: every write must change the etag", str(updated, "etag"), etag)
	}
	if str(updated, "provisioningStatus") != "disabled" {
		t.Errorf("update did not apply: %v", updated)
	}
	if str(updated, "createdDateTimeUtc") != str(created, "createdDateTimeUtc") {
		t.Errorf("update changed createdDateTimeUtc from %s to %s", str(created, "createdDateTimeUtc"), str(updated, "createdDateTimeUtc"))
	}
	r.failed("updateStale", "InvalidEtagError", 412)
	r.failed("createExisting", "DeviceAlreadyExistsError", 409)
	r.failed("deleteStale", "InvalidEtagError", 412)
	r.ok("delete", deleted)
	r.failed("getDeleted", "Error", 404)
	if e := r.step("getDeleted").Error; e != nil && e.Message != "Not found" {
		t.Errorf("getDeleted message %q, want the SDK's 'Not found'", e.Message)
	}
	return created, got, am
}

func TestNodeServiceSDKIndividualSymmetricKey(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "individual-symmetrickey", nil)
	created, got, am := checkLifecycle(t, r, "registrationId", "node-sym-1")
	pk, sk := str(created, "attestation.symmetricKey.primaryKey"), str(created, "attestation.symmetricKey.secondaryKey")
	checkGeneratedKey(t, "primaryKey", pk)
	checkGeneratedKey(t, "secondaryKey", sk)
	if pk == sk {
		t.Error("the generated primary and secondary keys are equal")
	}
	if get(got, "attestation.symmetricKey.primaryKey") != nil || get(got, "attestation.symmetricKey.secondaryKey") != nil {
		t.Errorf("get returned keys: %v", get(got, "attestation"))
	}
	if str(am, "symmetricKey.primaryKey") != pk || str(am, "symmetricKey.secondaryKey") != sk {
		t.Errorf("getIndividualEnrollmentAttestationMechanism returned %v, want the keys of the create answer", am)
	}
	// The update sent back what get returned (no keys): the keys are kept.
	updated := r.ok("update", 200)
	if str(updated, "attestation.symmetricKey.primaryKey") != pk {
		t.Errorf("the update replaced the keys: %v", get(updated, "attestation"))
	}
	after := r.ok("getAfterUpdate", 200)
	if str(after, "etag") != str(updated, "etag") || get(after, "initialTwin.tags.site") != "e2e" {
		t.Errorf("get after the update: %v", after)
	}
	r.failed("deleteDeleted", "Error", 404)
}

func TestNodeServiceSDKIndividualSuppliedKeys(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "individual-symmetrickey-supplied", nil)
	_, _, am := checkLifecycle(t, r, "registrationId", "node-sym-2")
	if str(am, "symmetricKey.primaryKey") != "bm9kZS1wcmltYXJ5LWtleS0wMTIzNDU2Nzg5YWJjZGVm" || str(am, "symmetricKey.secondaryKey") != "bm9kZS1zZWNvbmRhcnkta2V5LTAxMjM0NTY3ODlhYmNkZWY=" {
		t.Errorf("attestation mechanism %v, want the supplied keys", am)
	}
}

func TestNodeServiceSDKIndividualX509(t *testing.T) {
	t.Parallel()
	created, got, am, _, deviceSHA := x509Lifecycle(t, "individual-x509", "registrationId", "node-x509-1")
	for what, m := range map[string]map[string]any{"create": created, "get": got} {
		if th := str(m, "attestation.x509.clientCertificates.primary.info.sha256Thumbprint"); th != deviceSHA {
			t.Errorf("%s: sha256Thumbprint %q, want %q", what, th, deviceSHA)
		}
		if get(m, "attestation.x509.clientCertificates.primary.certificate") != nil {
			t.Errorf("%s returned the certificate itself, not only its info", what)
		}
		if s := str(m, "attestation.x509.clientCertificates.primary.info.subjectName"); !strings.Contains(s, "CN=node-x509-1") {
			t.Errorf("%s: subjectName %q", what, s)
		}
	}
	if th := str(am, "x509.clientCertificates.primary.info.sha256Thumbprint"); th != deviceSHA {
		t.Errorf("attestation mechanism thumbprint %q, want %q", th, deviceSHA)
	}
}

func TestNodeServiceSDKIndividualTPM(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "individual-tpm", nil)
	created, got, am := checkLifecycle(t, r, "registrationId", "node-tpm-1")
	ek := str(created, "attestation.tpm.endorsementKey")
	if !strings.HasPrefix(ek, "AToAAQALAAMAsgAgg3GXZ0SEs") || str(got, "attestation.tpm.endorsementKey") != ek || str(am, "tpm.endorsementKey") != ek {
		t.Errorf("endorsement key: create %q, get %q, attestation mechanism %q", ek, str(got, "attestation.tpm.endorsementKey"), str(am, "tpm.endorsementKey"))
	}
}

func TestNodeServiceSDKGroupSymmetricKey(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "group-symmetrickey", nil)
	created, got, am := checkLifecycle(t, r, "enrollmentGroupId", "node-grp-sym")
	pk := str(created, "attestation.symmetricKey.primaryKey")
	checkGeneratedKey(t, "group primaryKey", pk)
	checkGeneratedKey(t, "group secondaryKey", str(created, "attestation.symmetricKey.secondaryKey"))
	if get(got, "attestation.symmetricKey.primaryKey") != nil {
		t.Errorf("get returned the group keys: %v", get(got, "attestation"))
	}
	// getEnrollmentGroupAttestationMechanism posts to the lower-case
	// /enrollmentgroups/{id}/attestationmechanism.
	if str(am, "symmetricKey.primaryKey") != pk {
		t.Errorf("getEnrollmentGroupAttestationMechanism returned %v, want the keys of the create answer", am)
	}
	if updated := r.ok("update", 200); get(updated, "reprovisionPolicy.migrateDeviceData") != false {
		t.Errorf("update did not apply the reprovision policy: %v", updated)
	}
}

func TestNodeServiceSDKGroupX509(t *testing.T) {
	t.Parallel()
	created, got, am, signingSHA, _ := x509Lifecycle(t, "group-x509", "enrollmentGroupId", "node-grp-x509")
	for what, m := range map[string]map[string]any{"create": created, "get": got} {
		for _, which := range []string{"primary", "secondary"} {
			if th := str(m, "attestation.x509.signingCertificates."+which+".info.sha256Thumbprint"); th != signingSHA {
				t.Errorf("%s: %s sha256Thumbprint %q, want %q", what, which, th, signingSHA)
			}
		}
	}
	if th := str(am, "x509.signingCertificates.primary.info.sha256Thumbprint"); th != signingSHA {
		t.Errorf("attestation mechanism thumbprint %q", th)
	}
}

func TestNodeServiceSDKGroupTPMRefused(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "group-tpm", nil)
	r.failed("create", "ArgumentError", 400)
	if e := r.step("create").Error; e != nil && !strings.Contains(e.Body, "do not support TPM") {
		t.Errorf("the 400 does not explain itself: %s", e.Body)
	}
	r.failed("get", "Error", 404)
}

// pages returns the pages of a drained query, checking the paging headers:
// every page says x-ms-item-type, only the last lacks x-ms-continuation.
func (r *scenarioRun) pages(prefix, itemType string) [][]map[string]any {
	r.t.Helper()
	var out [][]map[string]any
	for i := 0; ; i++ {
		s, ok := r.byKey[fmt.Sprintf("%s[%d]", prefix, i)]
		if !ok {
			break
		}
		if !s.OK {
			r.t.Fatalf("%s page %d failed: %s %s", prefix, i, s.Error.Name, s.Error.Body)
		}
		var items []map[string]any
		if err := json.Unmarshal(s.Result, &items); err != nil {
			r.t.Fatalf("%s page %d is not an array: %s", prefix, i, s.Result)
		}
		if s.Headers["x-ms-item-type"] != itemType {
			r.t.Errorf("%s page %d: x-ms-item-type %q, want %q", prefix, i, s.Headers["x-ms-item-type"], itemType)
		}
		out = append(out, items)
		_, more := s.Headers["x-ms-continuation"]
		if _, next := r.byKey[fmt.Sprintf("%s[%d]", prefix, i+1)]; more != next {
			r.t.Errorf("%s page %d: x-ms-continuation present=%v but the SDK fetched a next page=%v", prefix, i, more, next)
		}
	}
	if len(out) == 0 {
		r.t.Fatalf("no pages of %s", prefix)
	}
	return out
}

func ids(pages [][]map[string]any, field string) (sizes []int, all []string) {
	for _, p := range pages {
		sizes = append(sizes, len(p))
		for _, e := range p {
			all = append(all, str(e, field))
		}
	}
	return sizes, all
}

func TestNodeServiceSDKQuery(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "query", nil)
	want := []string{"q-0", "q-1", "q-2", "q-3", "q-4", "q-5", "q-6"}

	pages := r.pages("enrollments", "Enrollment")
	sizes, got := ids(pages, "registrationId")
	if fmt.Sprint(sizes) != "[3 3 1]" || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages of 3: sizes %v, IDs %v; want [3 3 1] and %v", sizes, got, want)
	}
	for _, p := range pages {
		for _, e := range p {
			if get(e, "attestation.symmetricKey.primaryKey") != nil {
				t.Errorf("a query returned the keys of %s", str(e, "registrationId"))
			}
			if str(e, "etag") == "" {
				t.Errorf("a query item has no etag: %v", e)
			}
		}
	}

	sizes, got = ids(r.pages("enrollmentsAll", "Enrollment"), "registrationId")
	if fmt.Sprint(sizes) != "[7]" || !sort.StringsAreSorted(got) {
		t.Errorf("query without a page size: sizes %v, IDs %v", sizes, got)
	}

	sizes, got = ids(r.pages("groups", "EnrollmentGroup"), "enrollmentGroupId")
	if fmt.Sprint(sizes) != "[2 1]" || fmt.Sprint(got) != "[qg-0 qg-1 qg-2]" {
		t.Errorf("group pages of 2: sizes %v, IDs %v", sizes, got)
	}
}

// bulkResult decodes a BulkEnrollmentOperationResult step into
// "ID:errorCode" strings.
func (r *scenarioRun) bulkResult(name string) (bool, []string) {
	r.t.Helper()
	m := r.ok(name, 200)
	var errs []string
	list, _ := m["errors"].([]any)
	for _, e := range list {
		o, _ := e.(map[string]any)
		errs = append(errs, fmt.Sprintf("%v:%v", o["registrationId"], o["errorCode"]))
	}
	ok, _ := m["isSuccessful"].(bool)
	return ok, errs
}

func TestNodeServiceSDKBulk(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "bulk", nil)
	for _, c := range []struct {
		step   string
		ok     bool
		errors string
	}{
		{"create", false, "[bulk.bad.:400004]"},
		{"createAgain", false, "[bulk-1:409201]"},
		{"update", true, "[]"},
		{"updateIfMatchEtag", false, "[bulk-2:412001]"},
		{"delete", false, "[bulk-missing:404201]"},
	} {
		ok, errs := r.bulkResult(c.step)
		if ok != c.ok || fmt.Sprint(errs) != c.errors {
			t.Errorf("bulk %s: isSuccessful %v, errors %v; want %v, %s", c.step, ok, errs, c.ok, c.errors)
		}
	}
	if b1 := r.ok("get bulk-1", 200); str(b1, "provisioningStatus") != "disabled" {
		t.Errorf("bulk update did not apply: %v", b1)
	}
	after := r.ok("get bulk-1 after", 200)
	if str(after, "provisioningStatus") != "enabled" || str(after, "etag") == str(r.ok("get bulk-1", 200), "etag") {
		t.Errorf("bulk updateIfMatchEtag with the current etag did not apply: %v", after)
	}
	if _, left := ids(r.pages("left", "Enrollment"), "registrationId"); len(left) != 0 {
		t.Errorf("enrollments left after the bulk delete: %v", left)
	}
}

func TestNodeServiceSDKRegistrations(t *testing.T) {
	t.Parallel()
	r := runScenario(t, "registrations", nil)
	r.failed("get missing", "Error", 404)
	r.failed("delete missing", "Error", 404)
	if s := r.step("delete missing with etag"); s.OK || s.Error.StatusCode < 400 || s.Error.StatusCode >= 500 {
		t.Errorf("delete of a missing record with an etag: %+v", s)
	}
	r.ok("create group", 200)
	pages := r.pages("query", "DeviceRegistration")
	if len(pages) != 1 || len(pages[0]) != 0 {
		t.Errorf("registration query of a group without devices: %v", pages)
	}
}

// TestNodeServiceSDKOnPort443 runs the service SDK exactly as it ships (no
// agent) against a server on 127.0.0.1:443, with HostName=localhost: what
// a user of Azure's SDK does against a self-hosted dpsd.
func TestNodeServiceSDKOnPort443(t *testing.T) {
	s := e2e.StartServer443(t)
	env := s.NodeEnv()
	env["DPS_NO_AGENT"] = "1"
	env["DPS_CONNECTION_STRING"] = strings.Replace(s.ConnString, "HostName=localhost:443;", "HostName=localhost;", 1)
	if env["DPS_CONNECTION_STRING"] == s.ConnString {
		t.Fatalf("connection string %q does not name localhost:443", s.ConnString)
	}
	r := parseScenario(t, e2e.RunNode(t, "service-sdk.js smoke", env))
	created := r.ok("create", 200)
	checkGeneratedKey(t, "primaryKey", str(created, "attestation.symmetricKey.primaryKey"))
	r.ok("get", 200)
	r.ok("delete", deleted)
}
