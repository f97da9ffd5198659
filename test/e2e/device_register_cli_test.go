package e2e_test

// `dpsd device register` (the Go device client, github.com/dpsd/dpsd/client,
// behind the CLI) over HTTPS against the real dpsd binary, in the fast path
// and in strict mode, with its JSON output parsed.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestDeviceRegisterCLI registers four devices with `dpsd device register
// --output json`: the walkthrough's self-signed certificate with its encrypted key
// (--passphrase 1234; the registration ID comes from the certificate's CN),
// a chain made by `dpsd cert` (full chain file; group on the intermediate,
// root uploaded verified), an individual symmetric key (--symmetric-key) and
// a group device (--group-key, the CLI derives the device key); and one
// device whose group key is wrong, which the CLI must report with dpsd's
// reason.
func TestDeviceRegisterCLI(t *testing.T) {
	t.Parallel()
	dir, chain := devCredentials(t, "cli-chain-device")

	for _, mode := range devModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := e2e.StartServer(t, mode.args...)
			indKey, groupKey := devEnroll(t, s, dir, chain, "cli")
			data := []string{"--data", s.Dir}
			disabled := devCLIJSON(t, "", append([]string{"enrollment", "create", "--enrollment-id", "cli-disabled", "--attestation-type", "symmetrickey", "--provisioning-status", "disabled", "-o", "json"}, data...)...)
			noHub := devCLIJSON(t, "", append([]string{"enrollment", "create", "--enrollment-id", "cli-no-hub", "--attestation-type", "symmetrickey", "--iot-hubs", "unlinked-hub.azure-devices.net", "-o", "json"}, data...)...)

			for _, tc := range []struct {
				name, id string
				args     []string
				want     map[string]string
				group    bool
			}{
				{name: "x509-passphrase", id: e2e.WalkthroughDeviceID,
					args: []string{"--cert", e2e.WalkthroughDeviceCert, "--key", e2e.WalkthroughDeviceKey, "--passphrase", e2e.WalkthroughPassphrase}},
				{name: "x509-chain", id: chain.DeviceID, group: true,
					args: []string{"--cert", chain.Path(chain.FullChain), "--key", chain.Path(chain.DeviceKey)},
					want: map[string]string{"x509.enrollmentGroupId": "cli-x509-group"}},
				{name: "symmetric-key", id: "cli-sym-device",
					args: []string{"--registration-id", "cli-sym-device", "--symmetric-key", indKey}},
				{name: "group-key", id: "cli-sym-group-device-01", group: true,
					args: []string{"--registration-id", "cli-sym-group-device-01", "--group-key", groupKey},
					want: map[string]string{"symmetricKey.enrollmentGroupId": "cli-sym-group"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					start := time.Now()
					out := devCLI(t, dir, append([]string{"device", "register", "--data", s.Dir, "--output", "json"}, tc.args...)...)
					elapsed := time.Since(start)
					var st map[string]any
					if err := json.Unmarshal([]byte(out), &st); err != nil {
						t.Fatalf("dpsd device register --output json printed no JSON object: %v\n%s", err, out)
					}
					want := map[string]string{"registrationId": tc.id, "status": "assigned", "substatus": "initialAssignment", "assignedHub": devHub, "deviceId": tc.id}
					for k, v := range tc.want {
						want[k] = v
					}
					devWant(t, "device register", st, want)
					if !tc.group && (get(st, "x509.enrollmentGroupId") != nil || get(st, "symmetricKey.enrollmentGroupId") != nil) {
						t.Errorf("individual enrollment, but the state names a group: %s", out)
					}
					for _, f := range []string{"createdDateTimeUtc", "lastUpdatedDateTimeUtc"} {
						if !devTimeRE.MatchString(str(st, f)) {
							t.Errorf("%s %q is not a DPS date", f, str(st, f))
						}
					}
					// The client honours Retry-After: 3 of the strict answer.
					if mode.strict && elapsed < 2500*time.Millisecond {
						t.Errorf("strict: the registration took %s; the client must wait Retry-After (3 s) before it polls", elapsed)
					}
					rec, found := devRecord(t, s, tc.id)
					if !found {
						t.Fatalf("no registration record for %s", tc.id)
					}
					devWant(t, "registration record", rec, map[string]string{"etag": str(st, "etag"), "assignedHub": devHub, "substatus": "initialAssignment"})
				})
			}

			// disabled and failed are terminal results of the operation:
			// the client reaches them (polling, in strict mode), prints the
			// state and exits non-zero.
			for _, tc := range []struct {
				name, id, key string
				want          map[string]any
				record        bool // a failed registration leaves a record, a disabled one does not
			}{
				{name: "terminal-disabled", id: "cli-disabled", key: str(disabled, "attestation.symmetricKey.primaryKey"),
					want: map[string]any{"status": "disabled", "errorCode": float64(401002), "errorMessage": `enrollment "cli-disabled" is disabled`}},
				{name: "terminal-failed", id: "cli-no-hub", key: str(noHub, "attestation.symmetricKey.primaryKey"), record: true,
					want: map[string]any{"status": "failed", "errorCode": float64(401001)}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					start := time.Now()
					out, errOut, err := devRun(t, dir, "device", "register", "--data", s.Dir, "--output", "json", "--registration-id", tc.id, "--symmetric-key", tc.key)
					elapsed := time.Since(start)
					if err == nil {
						t.Errorf("dpsd device register exited 0 for a %s registration", tc.want["status"])
					}
					var st map[string]any
					if err := json.Unmarshal([]byte(out), &st); err != nil {
						t.Fatalf("no registration state printed: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
					}
					for k, v := range tc.want {
						if st[k] != v {
							t.Errorf("%s = %#v, want %#v", k, st[k], v)
						}
					}
					if tc.want["status"] == "failed" && !strings.HasPrefix(str(st, "errorMessage"), "IoTHub not found.") {
						t.Errorf("errorMessage %q, want it to start with Azure's \"IoTHub not found.\"", str(st, "errorMessage"))
					}
					if st["assignedHub"] != nil || st["deviceId"] != nil {
						t.Errorf("a %s registration names a hub or device: %s", tc.want["status"], out)
					}
					wantErr := fmt.Sprintf("dpsd: error: registration of %q ended with status %s", tc.id, tc.want["status"])
					if !strings.Contains(errOut, wantErr) {
						t.Errorf("stderr lacks %q:\n%s", wantErr, errOut)
					}
					if mode.strict && elapsed < 2500*time.Millisecond {
						t.Errorf("strict: the registration took %s; the client must wait Retry-After (3 s) before it polls", elapsed)
					}
					rec, found := devRecord(t, s, tc.id)
					if found != tc.record {
						t.Errorf("registration record found %v, want %v: %v", found, tc.record, rec)
					}
					if found && (rec["status"] != "failed" || rec["errorCode"] != float64(401001)) {
						t.Errorf("the record of the failed registration: %v", rec)
					}
				})
			}

			t.Run("refused-wrong-group-key", func(t *testing.T) {
				t.Parallel()
				out, errOut, err := devRun(t, dir, "device", "register", "--data", s.Dir, "--output", "json",
					"--registration-id", "cli-sym-group-device-02", "--group-key", sas.NewKey(32))
				if err == nil {
					t.Fatalf("a device key derived from a random group key was accepted:\n%s", out)
				}
				for _, want := range []string{
					`dpsd: error: the SAS token signature matches no individual enrollment for registration ID "cli-sym-group-device-02" and no key derived from a symmetric-key enrollment group`,
					"HTTP 401, errorCode 401002, trackingId ",
					"dpsd: hint: ",
				} {
					if !strings.Contains(errOut, want) {
						t.Errorf("stderr lacks %q:\n%s", want, errOut)
					}
				}
				if strings.TrimSpace(out) != "" {
					t.Errorf("a refused registration printed a state:\n%s", out)
				}
				if _, found := devRecord(t, s, "cli-sym-group-device-02"); found {
					t.Errorf("a refused registration left a registration record")
				}
			})
		})
	}
}
