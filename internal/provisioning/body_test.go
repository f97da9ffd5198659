package provisioning_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/testutil"
)

func TestParseBody(t *testing.T) {
	tests := map[string]struct {
		in      string
		want    *dps.DeviceRegistration // nil: no body
		code    int                     // errorCode of a refusal
		message string
	}{
		"ok/empty":                  {in: ""},
		"ok/single-space":           {in: " "},
		"ok/whitespace":             {in: " \r\n\t"},
		"ok/null":                   {in: "null"},
		"ok/null-padded":            {in: "  null \n"},
		"ok/empty-object":           {in: "{}", want: &dps.DeviceRegistration{}},
		"ok/registration-id":        {in: `{"registrationId":"dev-01"}`, want: &dps.DeviceRegistration{RegistrationID: "dev-01"}},
		"ok/payload-object":         {in: `{"registrationId":"d","payload":{"a":[1,2]}}`, want: &dps.DeviceRegistration{RegistrationID: "d", Payload: json.RawMessage(`{"a":[1,2]}`)}},
		"ok/payload-null-is-none":   {in: `{"payload": null, "registrationId": "py-dev"}`, want: &dps.DeviceRegistration{RegistrationID: "py-dev"}},
		"ok/payload-scalar":         {in: `{"payload":"text"}`, want: &dps.DeviceRegistration{Payload: json.RawMessage(`"text"`)}},
		"ok/unknown-fields-ignored": {in: `{"registrationId":"d","forceRegistration":true,"x":{"y":1}}`, want: &dps.DeviceRegistration{RegistrationID: "d"}},
		"ok/tpm":                    {in: `{"registrationId":"d","tpm":{"endorsementKey":"AAA=","storageRootKey":"BBB="}}`, want: &dps.DeviceRegistration{RegistrationID: "d", TPM: &dps.TPMAttestation{EndorsementKey: "AAA=", StorageRootKey: "BBB="}}},
		"ok/csr":                    {in: `{"registrationId":"d","csr":"MIIB"}`, want: &dps.DeviceRegistration{RegistrationID: "d", CSR: "MIIB"}},
		"ok/leading-whitespace":     {in: "\n  {\"registrationId\":\"d\"}  \n", want: &dps.DeviceRegistration{RegistrationID: "d"}},
		"fail/not-json":             {in: "registrationId=dev", code: dpserr.CodeBadRequest, message: "the request body must be a JSON object"},
		"fail/json-array":           {in: `[{"registrationId":"d"}]`, code: dpserr.CodeBadRequest, message: "must be a JSON object"},
		"fail/json-string":          {in: `"dev-01"`, code: dpserr.CodeBadRequest, message: "must be a JSON object"},
		"fail/json-number":          {in: `42`, code: dpserr.CodeBadRequest, message: "must be a JSON object"},
		"fail/truncated":            {in: `{"registrationId":`, code: dpserr.CodeBadRequest, message: "not valid JSON"},
		"fail/trailing-garbage":     {in: `{"registrationId":"d"} {}`, code: dpserr.CodeBadRequest, message: "not valid JSON"},
		"fail/registration-id-type": {in: `{"registrationId":5}`, code: dpserr.CodeBadRequest, message: `field "registrationId" must be a string, not a JSON number`},
		"fail/tpm-type":             {in: `{"tpm":"x"}`, code: dpserr.CodeBadRequest, message: `field "tpm" must be an object`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := provisioning.ParseBody([]byte(tc.in))
			if tc.code != 0 {
				var de *dpserr.Error
				if !errors.As(err, &de) {
					t.Fatalf("ParseBody = %+v, %v; want a *dpserr.Error", got, err)
				}
				if de.Status != http.StatusBadRequest || de.Code != tc.code || !strings.Contains(de.Message, tc.message) {
					t.Errorf("error = %d %d %q, want 400 %d containing %q", de.Status, de.Code, de.Message, tc.code, tc.message)
				}
				if got != nil {
					t.Errorf("body %+v returned with the error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseBody: %v", err)
			}
			if (got == nil) != (tc.want == nil) {
				t.Fatalf("ParseBody = %+v, want %+v", got, tc.want)
			}
			if got != nil && testutil.JSON(t, got) != testutil.JSON(t, tc.want) {
				t.Errorf("ParseBody = %s, want %s", testutil.JSON(t, got), testutil.JSON(t, tc.want))
			}
			if got != nil && string(got.Payload) == "null" {
				t.Error("payload null kept")
			}
		})
	}
}

// FuzzParseBody: ParseBody never panics; it refuses with a 400 *dpserr.Error
// or returns a body only for valid JSON objects; what it returns survives a
// round trip through the wire.
func FuzzParseBody(f *testing.F) {
	for _, s := range []string{"", " ", "null", "{}", `{"registrationId":"dev-01"}`, `{"registrationId":"d","payload":{"a":1}}`,
		`{"payload":null,"registrationId":"d"}`, `[]`, `{"registrationId":5}`, `{"tpm":{"endorsementKey":"AA=="}}`, `{"csr":"x"}`,
		"\ufeff{}", `{"registrationId":"\ud800"}`, `{"payload":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := provisioning.ParseBody(b)
		if err != nil {
			var de *dpserr.Error
			if !errors.As(err, &de) || de.Status != http.StatusBadRequest || de.Code/1000 != 400 || de.Message == "" {
				t.Fatalf("ParseBody(%q) error %v is not a 400 dpserr.Error", b, err)
			}
			if body != nil {
				t.Fatalf("ParseBody(%q) returned a body and an error", b)
			}
			return
		}
		if body == nil {
			return
		}
		if !json.Valid(b) || !strings.HasPrefix(strings.TrimSpace(string(b)), "{") {
			t.Fatalf("ParseBody(%q) accepted something that is not a JSON object", b)
		}
		if string(body.Payload) == "null" {
			t.Fatalf("ParseBody(%q) kept payload null", b)
		}
		wire, err := json.Marshal(body)
		if err != nil {
			t.Fatalf("marshal %+v: %v", body, err)
		}
		again, err := provisioning.ParseBody(wire)
		if err != nil || again == nil {
			t.Fatalf("ParseBody(%s) of its own output: %+v, %v", wire, again, err)
		}
		if w2, _ := json.Marshal(again); string(w2) != string(wire) {
			t.Fatalf("round trip changed the body:\n %s\n %s", wire, w2)
		}
	})
}
