package e2e_test

// The official Azure IoT Node.js device SDK over HTTPS (ProvisioningDeviceClient
// with the Http transport, X509Security and SymmetricKeySecurityClient,
// unmodified) against the real dpsd binary on 127.0.0.1:443, through
// test/node/device-sdk.js: the four kinds of device the issue names, in the
// fast path and in strict mode, plus a refusal.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/test/e2e"
)

// devNodeDevice is a device of device-sdk.js (DPS_DEVICES).
type devNodeDevice struct {
	Name           string `json:"name"`
	RegistrationID string `json:"registrationId"`
	Cert           string `json:"cert,omitempty"`
	Key            string `json:"key,omitempty"`
	Passphrase     string `json:"passphrase,omitempty"`
	SymmetricKey   string `json:"symmetricKey,omitempty"`
}

// devNodeResult is what device-sdk.js printed for a device.
type devNodeResult struct {
	Name      string         `json:"name"`
	OK        bool           `json:"ok"`
	ElapsedMS int            `json:"elapsedMs"`
	Result    map[string]any `json:"result"`
	Error     *e2e.NodeError `json:"error"`
	Requests  []struct {
		Method     string `json:"method"`
		Path       string `json:"path"`
		Host       string `json:"host"`
		Status     int    `json:"status"`
		RetryAfter string `json:"retryAfter"`
	} `json:"requests"`
}

// devSpecialID uses every kind of character a registration ID may hold
// (upper case, '.', '_', ':', '-'); the SDK puts it into the path and into
// the SAS token's sr unencoded.
const devSpecialID = "Node.Sensor_3:Unit-07"

// devDeriveKey is a group device's key as DPS documents it:
// base64(HMAC-SHA256(base64decode(groupKey), registrationId)).
func devDeriveKey(t *testing.T, groupKey, registrationID string) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(groupKey)
	if err != nil {
		t.Fatalf("group key %q: %v", groupKey, err)
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(registrationID))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TestDeviceNodeSDKHTTPS registers, concurrently, a self-signed X.509
// device (the walkthrough's certificate, key with pass phrase 1234), a device of
// an X.509 group (the full chain PEM as its certificate; group on the
// intermediate, root uploaded verified), a symmetric-key device of an
// individual enrollment (and one whose registration ID has upper case,
// '.', '_' and ':'), a device of a symmetric-key group (key derived here),
// and a device with a wrong key that must be refused. Fast path: one
// PUT answers with the assignment. Strict: the PUT answers assigning with
// Retry-After 3 and the SDK polls the operation.
func TestDeviceNodeSDKHTTPS(t *testing.T) {
	t.Parallel()
	dir, chain := devCredentials(t, "node-chain-device")

	for _, mode := range devModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel() // the servers take turns on port 443
			s := e2e.StartServer443(t, mode.args...)
			indKey, groupKey := devEnroll(t, s, dir, chain, "node")
			data := []string{"--data", s.Dir}
			special := devCLIJSON(t, "", append([]string{"enrollment", "create", "--enrollment-id", devSpecialID, "--attestation-type", "symmetrickey", "-o", "json"}, data...)...)
			devCLI(t, "", append([]string{"enrollment", "create", "--enrollment-id", "node-sym-wrong", "--attestation-type", "symmetrickey"}, data...)...)

			devices := []devNodeDevice{
				{Name: "x509-self-signed", RegistrationID: e2e.WalkthroughDeviceID, Cert: filepath.Join(dir, e2e.WalkthroughDeviceCert), Key: filepath.Join(dir, e2e.WalkthroughDeviceKey), Passphrase: e2e.WalkthroughPassphrase},
				{Name: "x509-group-chain", RegistrationID: chain.DeviceID, Cert: chain.Path(chain.FullChain), Key: chain.Path(chain.DeviceKey)},
				{Name: "symkey-individual", RegistrationID: "node-sym-device", SymmetricKey: indKey},
				{Name: "symkey-group", RegistrationID: "node-sym-group-device-01", SymmetricKey: devDeriveKey(t, groupKey, "node-sym-group-device-01")},
				{Name: "symkey-special-id", RegistrationID: devSpecialID, SymmetricKey: str(special, "attestation.symmetricKey.primaryKey")},
				{Name: "symkey-wrong-key", RegistrationID: "node-sym-wrong", SymmetricKey: sas.NewKey(32)},
			}
			devJSON, _ := json.Marshal(devices)
			out := e2e.RunNode(t, "device-sdk.js", map[string]string{
				"NODE_EXTRA_CA_CERTS": s.CAFile,
				"DPS_ID_SCOPE":        s.IDScope,
				"DPS_DEVICE_HOST":     "localhost", // as shipped, the SDK reaches port 443 only
				"DPS_DEVICES":         string(devJSON),
			})
			var doc struct {
				Devices []devNodeResult `json:"devices"`
			}
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("device-sdk.js printed no JSON: %v\n%s", err, out)
			}
			got := map[string]*devNodeResult{}
			for i := range doc.Devices {
				got[doc.Devices[i].Name] = &doc.Devices[i]
			}
			for _, d := range devices {
				if got[d.Name] == nil {
					t.Fatalf("device-sdk.js printed nothing for %s:\n%s", d.Name, out)
				}
			}

			for _, tc := range []struct {
				name, id string
				want     map[string]string
				group    string // enrollmentGroupId
			}{
				{name: "x509-self-signed", id: e2e.WalkthroughDeviceID, want: map[string]string{"x509.certificateInfo.subjectName": "CN=my-x509-device"}},
				{name: "x509-group-chain", id: chain.DeviceID, want: map[string]string{"x509.enrollmentGroupId": "node-x509-group", "x509.signingCertificateInfo.subjectName": "CN=Azure IoT Hub Intermediate Cert Test Only"}, group: "node-x509-group"},
				{name: "symkey-individual", id: "node-sym-device"},
				{name: "symkey-group", id: "node-sym-group-device-01", want: map[string]string{"symmetricKey.enrollmentGroupId": "node-sym-group"}, group: "node-sym-group"},
				{name: "symkey-special-id", id: devSpecialID},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := got[tc.name]
					if !r.OK {
						t.Fatalf("the SDK failed: %+v\nrequests: %+v", r.Error, r.Requests)
					}
					want := map[string]string{"registrationId": tc.id, "assignedHub": devHub, "deviceId": tc.id, "status": "assigned", "substatus": "initialAssignment"}
					for k, v := range tc.want {
						want[k] = v
					}
					devWant(t, "SDK result", r.Result, want)
					if tc.group == "" && (get(r.Result, "x509.enrollmentGroupId") != nil || get(r.Result, "symmetricKey.enrollmentGroupId") != nil) {
						t.Errorf("individual enrollment, but the result names a group: %v", r.Result)
					}
					devCheckNodeRequests(t, mode, r)
					rec, found := devRecord(t, s, tc.id)
					if !found {
						t.Fatalf("no registration record for %s after the SDK's registration", tc.id)
					}
					devWant(t, "registration record", rec, map[string]string{"assignedHub": devHub, "status": "assigned", "etag": str(r.Result, "etag")})
				})
			}

			t.Run("symkey-wrong-key", func(t *testing.T) {
				r := got["symkey-wrong-key"]
				if r.OK || r.Error == nil {
					t.Fatalf("a SAS token signed with a random key was accepted: %v", r.Result)
				}
				if r.Error.Name != "UnauthorizedError" || r.Error.StatusCode != 401 {
					t.Errorf("the SDK reported %s (HTTP %d), want UnauthorizedError (HTTP 401)", r.Error.Name, r.Error.StatusCode)
				}
				const reason = `the SAS token signature matches neither the primary nor the secondary key of individual enrollment "node-sym-wrong"`
				var body struct {
					ErrorCode  int    `json:"errorCode"`
					TrackingID string `json:"trackingId"`
					Message    string `json:"message"`
				}
				if err := json.Unmarshal([]byte(r.Error.Body), &body); err != nil {
					t.Fatalf("the error body the SDK kept is not JSON: %v: %q", err, r.Error.Body)
				}
				if body.ErrorCode != 401002 || !strings.Contains(body.Message, reason) || !devUUIDRE.MatchString(body.TrackingID) {
					t.Errorf("error body %+v, want errorCode 401002, a trackingId and the reason %q", body, reason)
				}
				if !strings.Contains(r.Error.Message, "matches neither the primary nor the secondary key") {
					t.Errorf("the SDK's error message %q does not carry dpsd's reason", r.Error.Message)
				}
				if len(r.Requests) != 1 || r.Requests[0].Method != "PUT" || r.Requests[0].Status != 401 {
					t.Errorf("requests %+v, want one PUT answered 401 (the SDK does not retry a 401)", r.Requests)
				}
				if _, found := devRecord(t, s, "node-sym-wrong"); found {
					t.Errorf("a refused registration left a registration record")
				}
				if !devLogLine(s, "request refused", "trackingId="+body.TrackingID, "errorCode=401002", "matches neither the primary nor the secondary key") {
					t.Errorf("the server log has no refusal line with trackingId %s and the reason:\n%s", body.TrackingID, s.Logs())
				}
			})
		})
	}
}

// devCheckNodeRequests checks what the SDK sent: fast path, one PUT
// answered 202; strict, a PUT answered 202 with Retry-After 3, then polls
// of the operation until a 200, no sooner than Retry-After said.
func devCheckNodeRequests(t *testing.T, mode devMode, r *devNodeResult) {
	t.Helper()
	if len(r.Requests) == 0 {
		t.Fatalf("no request of the device was observed")
	}
	put := r.Requests[0]
	if put.Method != "PUT" || !strings.Contains(put.Path, "/register?api-version=2019-03-31") || put.Status != 202 || put.Host != "localhost" {
		t.Errorf("first request %+v, want PUT https://localhost/…/register?api-version=2019-03-31 answered 202", put)
	}
	if !mode.strict {
		if len(r.Requests) != 1 {
			t.Errorf("fast path: the SDK made %d requests (%+v), want the one PUT", len(r.Requests), r.Requests)
		}
		return
	}
	if put.RetryAfter != "3" {
		t.Errorf("strict: the PUT's Retry-After %q, want 3", put.RetryAfter)
	}
	polls := r.Requests[1:]
	if len(polls) == 0 {
		t.Fatalf("strict: the SDK did not poll (requests %+v)", r.Requests)
	}
	for i, p := range polls {
		want := 202
		if i == len(polls)-1 {
			want = 200
		}
		if p.Method != "GET" || !strings.Contains(p.Path, "/operations/") || p.Status != want {
			t.Errorf("strict: poll %d %+v, want GET …/operations/{operationId} answered %d", i, p, want)
		}
	}
	if r.ElapsedMS < 2500 {
		t.Errorf("strict: the registration took %d ms; with Retry-After: 3 it takes 3 s", r.ElapsedMS)
	}
}
