package deviceapi_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
)

type edgeCase struct {
	method string
	path   string // %[1]s is the ID scope; api-version is added
	id     string // the device whose SAS token is sent ("": none)
	hdr    map[string]string
	body   []byte
	status int
	code   int    // errorCode of an error answer
	msg    string // in the error message
	// opStatus is the status of a 2xx answer's body.
	opStatus string
	// record: the registration the request must (or must not) have written.
	record string
	// upperScope sends the ID scope upper-cased in the path.
	upperScope bool
}

func body(s string) []byte { return []byte(s) }

// registerBody returns a register body of exactly n bytes.
func registerBody(id string, n int) []byte {
	head := `{"registrationId":"` + id + `","payload":{"pad":"`
	tail := `"}}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// TestEdgeInput sends what misbehaving and unusual clients send to the
// device API over HTTPS and checks the documented answers.
func TestEdgeInput(t *testing.T) {
	a := newAPI(t)
	base, c := a.server(t)
	json := map[string]string{"Content-Type": "application/json"}
	tests := map[string]edgeCase{
		"fail/body-not-json": {method: "PUT", path: "/%[1]s/registrations/e-dev-01/register", id: "e-dev-01", hdr: json, body: body("registrationId=e-dev-01"),
			status: 400, code: dpserr.CodeBadRequest, msg: "the request body must be a JSON object"},
		"fail/body-json-array": {method: "PUT", path: "/%[1]s/registrations/e-dev-02/register", id: "e-dev-02", hdr: json, body: body(`[{"registrationId":"e-dev-02"}]`),
			status: 400, code: dpserr.CodeBadRequest, msg: "must be a JSON object"},
		"fail/body-invalid-json": {method: "PUT", path: "/%[1]s/registrations/e-dev-03/register", id: "e-dev-03", hdr: json, body: body(`{"registrationId":"e-dev-03"`),
			status: 400, code: dpserr.CodeBadRequest, msg: "not valid JSON"},
		"fail/body-registration-id-differs-from-path": {method: "PUT", path: "/%[1]s/registrations/e-dev-04/register", id: "e-dev-04", hdr: json, body: body(`{"registrationId":"e-dev-other"}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: `registrationId "e-dev-other" in the body does not match "e-dev-04" in the request path`},
		"fail/invalid-registration-id-in-path-leading-dot": {method: "PUT", path: "/%[1]s/registrations/.e-dev/register", id: ".e-dev", hdr: json, body: body(`{}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: `registration ID ".e-dev" must start with a letter or digit`},
		"fail/invalid-registration-id-in-path-space": {method: "PUT", path: "/%[1]s/registrations/e%%20dev/register", hdr: json, body: body(`{}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: `registration ID "e dev" contains ' '`},
		"fail/invalid-registration-id-in-path-too-long": {method: "PUT", path: "/%[1]s/registrations/" + strings.Repeat("a", 129) + "/register", hdr: json, body: body(`{}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: "the limit is 128"},
		"fail/invalid-registration-id-in-path-encoded-slash": {method: "PUT", path: "/%[1]s/registrations/e%%2Fdev/register", hdr: json, body: body(`{}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: `registration ID "e/dev" contains '/'`},
		"fail/body-over-96KB": {method: "PUT", path: "/%[1]s/registrations/e-dev-05/register", id: "e-dev-05", hdr: json, body: registerBody("e-dev-05", 96<<10+1),
			status: 413, code: dpserr.CodeTooLarge, msg: "the request body is larger than the 96 KB limit"},
		"fail/body-1MB": {method: "PUT", path: "/%[1]s/registrations/e-dev-06/register", id: "e-dev-06", hdr: json, body: registerBody("e-dev-06", 1<<20),
			status: 413, code: dpserr.CodeTooLarge, msg: "96 KB"},
		"fail/csr-not-base64": {method: "PUT", path: "/%[1]s/registrations/e-dev-07/register", id: "e-dev-07", hdr: json, body: body(`{"registrationId":"e-dev-07","csr":"MIIBCjCBsQIBADA"}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: "csr is not base64"},
		"fail/status-lookup-with-client-csr": {method: "POST", path: "/%[1]s/registrations/e-dev-07", id: "e-dev-07", hdr: json, body: body(`{"registrationId":"e-dev-07","clientCertificateCsr":"MIIB"}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: "a status lookup must not carry a csr"},
		"fail/status-lookup-with-csr": {method: "POST", path: "/%[1]s/registrations/e-dev-07", id: "e-dev-07", hdr: json, body: body(`{"registrationId":"e-dev-07","csr":"MIIB"}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: "a status lookup must not carry a csr"},
		"fail/tpm-endorsement-key-not-a-public-area": {method: "PUT", path: "/%[1]s/registrations/e-dev-08/register", hdr: json, body: body(`{"registrationId":"e-dev-08","tpm":{"endorsementKey":"AAAA"}}`),
			status: 400, code: dpserr.CodeInvalidArgument, msg: "tpm.endorsementKey: malformed TPM public key"},
		"fail/register-with-get": {method: "GET", path: "/%[1]s/registrations/e-dev-09/register", id: "e-dev-09",
			status: 405, code: dpserr.CodeMethodNotAllowed, msg: "method GET is not allowed"},
		"fail/poll-with-post": {method: "POST", path: "/%[1]s/registrations/e-dev-09/operations/5.0123456789abcdef.x", id: "e-dev-09", body: body(`{}`),
			status: 405, code: dpserr.CodeMethodNotAllowed, msg: "use GET"},
		"fail/status-lookup-with-get": {method: "GET", path: "/%[1]s/registrations/e-dev-09", id: "e-dev-09",
			status: 405, code: dpserr.CodeMethodNotAllowed, msg: "use POST"},
		"fail/unknown-route": {method: "GET", path: "/%[1]s/devices/e-dev-09",
			status: 404, code: dpserr.CodeNotFound, msg: "no device API operation"},
		"fail/too-many-segments": {method: "PUT", path: "/%[1]s/registrations/e-dev-09/register/again", id: "e-dev-09",
			status: 404, code: dpserr.CodeNotFound, msg: "no device API operation"},
		"fail/root": {method: "GET", path: "/",
			status: 404, code: dpserr.CodeNotFound, msg: "no device API operation"},
		"fail/unknown-operation": {method: "GET", path: "/%[1]s/registrations/e-dev-10/operations/5.0123456789abcdef.00000000-0000-4000-8000-000000000000", id: "e-dev-10",
			status: 404, code: dpserr.CodeOperationNotFound, msg: `operation "5.0123456789abcdef.00000000-0000-4000-8000-000000000000" of registration "e-dev-10" not found`},
		"fail/status-lookup-before-registering": {method: "POST", path: "/%[1]s/registrations/e-dev-11", id: "e-dev-11", hdr: json, body: body(`{"registrationId":"e-dev-11"}`),
			status: 404, code: dpserr.CodeRegistrationNotFound, msg: "has no registration record"},

		"fail/body-not-utf-8": {method: "PUT", path: "/%[1]s/registrations/e-dev-12/register", id: "e-dev-12", hdr: json, body: body("{\"registrationId\":\"e-dev-12\",\"payload\":{\"tag\":\"caf\xe9\"}}"),
			status: 400, code: dpserr.CodeBadRequest, msg: "it is not UTF-8 (the byte at offset 50 is 0xe9)"},
		"fail/body-nul-character": {method: "PUT", path: "/%[1]s/registrations/e-dev-13/register", id: "e-dev-13", hdr: json, body: body(`{"registrationId":"e-dev-13","payload":{"tag":"a\u0000b"}}`),
			status: 400, code: dpserr.CodeBadRequest, msg: `a string holds the NUL character (\u0000)`},
		"fail/body-sent-as-form": {method: "PUT", path: "/%[1]s/registrations/e-dev-14/register", id: "e-dev-14", hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, body: body(`{"registrationId":"e-dev-14"}`),
			status: 415, code: dpserr.CodeUnsupportedMediaType, msg: `the request body is sent as "application/x-www-form-urlencoded"; this endpoint reads JSON`},
		"fail/id-scope-of-20KB-is-not-echoed-whole": {method: "PUT", path: "/" + strings.Repeat("s", 20000) + "/registrations/e-dev-15/register", hdr: json, body: body(`{}`),
			status: 401, code: dpserr.CodeUnauthorized, msg: "sssss... (20000 bytes)\" is not served here"},

		"ok/content-type-with-charset": {method: "PUT", path: "/%[1]s/registrations/e-ok-15/register", id: "e-ok-15",
			hdr: map[string]string{"Content-Type": "application/json; charset=utf-8"}, body: body(`{"registrationId":"e-ok-15"}`),
			status: 202, opStatus: "assigned", record: "e-ok-15"},
		"ok/body-with-escaped-backslash-u0000": {method: "PUT", path: "/%[1]s/registrations/e-ok-16/register", id: "e-ok-16", hdr: json, body: body(`{"registrationId":"e-ok-16","payload":{"path":"C:\\u0000"}}`),
			status: 202, opStatus: "assigned", record: "e-ok-16"},
		"ok/body-exactly-96KB": {method: "PUT", path: "/%[1]s/registrations/e-ok-01/register", id: "e-ok-01", hdr: json, body: registerBody("e-ok-01", 96<<10),
			status: 202, opStatus: "assigned", record: "e-ok-01"},
		"ok/content-encoding-utf-8-ignored": {method: "PUT", path: "/%[1]s/registrations/e-ok-02/register", id: "e-ok-02",
			hdr: map[string]string{"Content-Type": "application/json", "Content-Encoding": "utf-8"}, body: body(`{"registrationId":"e-ok-02"}`),
			status: 202, opStatus: "assigned", record: "e-ok-02"},
		"ok/no-body": {method: "PUT", path: "/%[1]s/registrations/e-ok-03/register", id: "e-ok-03",
			status: 202, opStatus: "assigned", record: "e-ok-03"},
		"ok/body-without-registration-id": {method: "PUT", path: "/%[1]s/registrations/e-ok-04/register", id: "e-ok-04", body: body(`{"payload":{"a":1}}`),
			status: 202, opStatus: "assigned", record: "e-ok-04"},
		"ok/body-null": {method: "PUT", path: "/%[1]s/registrations/e-ok-05/register", id: "e-ok-05", body: body(`null`),
			status: 202, opStatus: "assigned", record: "e-ok-05"},
		"ok/registration-id-in-body-differs-in-case": {method: "PUT", path: "/%[1]s/registrations/e-ok-06/register", id: "e-ok-06", hdr: json, body: body(`{"registrationId":"E-OK-06"}`),
			status: 202, opStatus: "assigned", record: "e-ok-06"},
		"ok/path-segments-case-insensitive": {method: "PUT", path: "/%[1]s/Registrations/e-ok-07/Register", id: "e-ok-07", hdr: json, body: body(`{"registrationId":"e-ok-07"}`),
			status: 202, opStatus: "assigned", record: "e-ok-07"},
		"ok/trailing-slash": {method: "PUT", path: "/%[1]s/registrations/e-ok-08/register/", id: "e-ok-08", hdr: json, body: body(`{}`),
			status: 202, opStatus: "assigned", record: "e-ok-08"},
		"ok/percent-encoded-registration-id": {method: "PUT", path: "/%[1]s/registrations/e%%2Dok%%2D09/register", id: "e-ok-09", body: body(`{"registrationId":"e-ok-09"}`),
			status: 202, opStatus: "assigned", record: "e-ok-09"},
		"ok/force-registration-query": {method: "PUT", path: "/%[1]s/registrations/e-ok-10/register?api-version=2019-03-31&forceRegistration=true", id: "e-ok-10", body: body(`{}`),
			status: 202, opStatus: "assigned", record: "e-ok-10"},
		"ok/id-scope-case-insensitive": {method: "PUT", path: "/%[1]s/registrations/e-ok-13/register", id: "e-ok-13", body: body(`{}`),
			status: 202, opStatus: "assigned", record: "e-ok-13", upperScope: true},
		"ok/registration-id-with-dot-colon-underscore": {method: "PUT", path: "/%[1]s/registrations/e.ok:14_x/register", id: "e.ok:14_x", body: body(`{"registrationId":"e.ok:14_x"}`),
			status: 202, opStatus: "assigned", record: "e.ok:14_x"},
		"ok/old-api-version": {method: "PUT", path: "/%[1]s/registrations/e-ok-11/register?api-version=2018-11-01", id: "e-ok-11", body: body(`{}`),
			status: 202, opStatus: "assigned", record: "e-ok-11"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := tc.path
			if strings.Contains(path, "%[1]s") {
				sc := a.Scope
				if tc.upperScope {
					sc = strings.ToUpper(sc)
				}
				path = fmt.Sprintf(tc.path, sc)
			}
			if !strings.Contains(path, "?") {
				path += "?api-version=2021-06-01"
			}
			hdr := map[string]string{}
			for k, v := range tc.hdr {
				hdr[k] = v
			}
			if tc.id != "" {
				hdr["Authorization"] = a.token(tc.id)
			}
			r := send(t, c, tc.method, base+path, hdr, tc.body)
			if r.Status != tc.status {
				t.Fatalf("%s %s: HTTP %d %s, want %d", tc.method, path, r.Status, r.Body, tc.status)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if r.Header.Get("x-ms-request-id") == "" {
				t.Error("no x-ms-request-id")
			}
			if tc.code != 0 {
				var e dps.ErrorDetails
				provtest.StrictDecode(t, r.Body, &e)
				if e.ErrorCode != tc.code || !strings.Contains(e.Message, tc.msg) {
					t.Errorf("error %d %q, want %d containing %q", e.ErrorCode, dps.Truncate(e.Message), tc.code, tc.msg)
				}
				if len(e.Message) > 1024 {
					t.Errorf("the message is %d bytes long: it echoes what the client sent whole", len(e.Message))
				}
				if e.TrackingID != r.Header.Get("x-ms-request-id") {
					t.Errorf("trackingId %q, x-ms-request-id %q", e.TrackingID, r.Header.Get("x-ms-request-id"))
				}
				if tc.id != "" && tc.method == "PUT" {
					if _, err := a.Store.Registration(context.Background(), tc.id); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("a refused request left a registration record for %s (err %v)", tc.id, err)
					}
				}
				return
			}
			var op dps.RegistrationOperationStatus
			provtest.StrictDecode(t, r.Body, &op)
			if op.Status != tc.opStatus {
				t.Errorf("status %q, want %q: %s", op.Status, tc.opStatus, r.Body)
			}
			if tc.record != "" {
				rec, err := a.Store.Registration(context.Background(), tc.record)
				if err != nil || rec.Result.Status != dps.StatusAssigned {
					t.Errorf("record of %s: %+v, %v", tc.record, rec, err)
				}
			}
		})
	}
}

// TestPolling covers the poll: Node sends "{}" on the GET; an operation of
// another device is not found (even with valid credentials for that other
// device); the Location header points at the register URL on the
// configured endpoint, whatever Host header the client sent.
func TestPolling(t *testing.T) {
	a := newAPI(t)
	base, c := a.server(t)
	reg := func(id string) (*response, dps.RegistrationOperationStatus) {
		r := send(t, c, "PUT", base+"/"+a.Scope+"/registrations/"+id+"/register?api-version=2019-03-31",
			map[string]string{"Authorization": a.token(id), "Content-Type": "application/json", "Host": "evil.example"}, body(`{"registrationId":"`+id+`"}`))
		if r.Status != 202 {
			t.Fatalf("register %s: %d %s", id, r.Status, r.Body)
		}
		var op dps.RegistrationOperationStatus
		provtest.StrictDecode(t, r.Body, &op)
		return r, op
	}
	r, opA := reg("poll-dev-a")
	if got, want := r.Header.Get("Location"), "https://"+endpoint+"/"+a.Scope+"/registrations/poll-dev-a/register"; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	_, opB := reg("poll-dev-b")
	pollURL := func(id, op string) string {
		return base + "/" + a.Scope + "/registrations/" + id + "/operations/" + op + "?api-version=2019-03-31"
	}

	for _, tc := range []struct {
		name    string
		id, op  string // in the poll URL; the token is id's unless noAuth
		noAuth  bool
		headers map[string]string
		body    string
		status  int
		check   func(t *testing.T, r *response)
	}{
		{name: "ok/empty-object-body-as-node-sends", id: "poll-dev-a", op: opA.OperationID, body: `{}`, status: 200,
			headers: map[string]string{"Content-Type": "application/json; charset=utf-8", "Content-Length": strconv.Itoa(2)},
			check: func(t *testing.T, r *response) {
				var op dps.RegistrationOperationStatus
				provtest.StrictDecode(t, r.Body, &op)
				if op.OperationID != opA.OperationID || op.Status != "assigned" || op.RegistrationState == nil || op.RegistrationState.AssignedHub != hub {
					t.Errorf("poll: %s", r.Body)
				}
			}},
		{name: "ok/garbage-body-ignored", id: "poll-dev-a", op: opA.OperationID, body: ` `, status: 200},
		// Not found, and not revealing the other device.
		{name: "fail/another-devices-operation", id: "poll-dev-a", op: opB.OperationID, status: 404,
			check: func(t *testing.T, r *response) {
				var e dps.ErrorDetails
				provtest.StrictDecode(t, r.Body, &e)
				if e.ErrorCode != dpserr.CodeOperationNotFound || strings.Contains(string(r.Body), "poll-dev-b") {
					t.Errorf("error %s (must not reveal the other device)", r.Body)
				}
			}},
		{name: "fail/operation-id-case-changed", id: "poll-dev-a", op: strings.ToUpper(opA.OperationID), status: 404},
		{name: "fail/poll-without-credentials", id: "poll-dev-a", op: opA.OperationID, noAuth: true, status: 401},
		{name: "ok/registration-id-case-in-poll-path", id: "POLL-DEV-A", op: opA.OperationID, status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			maps.Copy(hdr, tc.headers)
			if !tc.noAuth {
				hdr["Authorization"] = a.token(tc.id)
			}
			var b []byte
			if tc.body != "" {
				b = body(tc.body)
			}
			r := send(t, c, "GET", pollURL(tc.id, tc.op), hdr, b)
			if r.Status != tc.status {
				t.Fatalf("poll %s of %s: %d %s, want %d", tc.op, tc.id, r.Status, r.Body, tc.status)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}
