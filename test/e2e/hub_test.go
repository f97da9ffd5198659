package e2e_test

// Assignment that reaches the hub, end to end: the real dpsd binary, told
// with --outbound-ca-file to trust local implementations of the IoT Hub
// registry API (internal/hub/hubtest), linked to them with
// `dpsd linked-hub create --device-registry azure-iothub`; devices driven
// by the official Node.js device SDK and by curl, in fast and strict mode;
// the exact requests each hub received asserted.

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/testutil"
	"github.com/dpsd/dpsd/test/e2e"
)

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("key %q: %v", s, err)
	}
	return b
}

// TestHubReprovisioningNodeSDK: every re-provisioning case, each driven by
// the Node SDK over HTTPS (port 443) and over MQTT, in fast and in strict
// mode. A device first lands on hub A with the enrollment's initial twin;
// an operator changes its twin there; then its enrollment moves to hub B
// (or not), and the device registers again.
func TestHubReprovisioningNodeSDK(t *testing.T) {
	t.Parallel()
	for _, mode := range serveModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel() // the servers take turns on port 443
			env := newHubEnv(t)
			s, mqttEndpoint := startMQTTServer(t, true, env.args(mode.args...)...)
			env.link(t, s)
			type device struct {
				id, key, transport string
				c                  hubCase
			}
			var devices []device
			for _, c := range hubCases {
				if c.legacy {
					continue // the SDK sends api-version 2019-03-31; curl covers the legacy versions
				}
				for _, tr := range []string{"https", "mqtt"} {
					id := "node-" + mode.name + "-" + tr + "-" + c.name
					devices = append(devices, device{id: id, key: env.enroll(t, s, id, c), transport: tr, c: c})
				}
			}
			// register runs every device with the SDK and returns each one's
			// registrationState.
			register := func(t *testing.T) map[string]map[string]any {
				t.Helper()
				var overHTTPS []devNodeDevice
				var overMQTT []mqttDevice
				for _, d := range devices {
					if d.transport == "https" {
						overHTTPS = append(overHTTPS, devNodeDevice{Name: d.id, RegistrationID: d.id, SymmetricKey: d.key})
					} else {
						overMQTT = append(overMQTT, mqttDevice{ID: d.id, Transport: "mqtt", SymmetricKey: d.key})
					}
				}
				got := map[string]map[string]any{}
				b, _ := json.Marshal(overHTTPS)
				out := e2e.RunNode(t, "device-sdk.js", map[string]string{"NODE_EXTRA_CA_CERTS": s.CAFile, "DPS_ID_SCOPE": s.IDScope,
					"DPS_DEVICE_HOST": "localhost", "DPS_DEVICES": string(b)})
				var doc struct{ Devices []devNodeResult }
				if err := json.Unmarshal([]byte(out), &doc); err != nil {
					t.Fatalf("device-sdk.js printed no JSON: %v\n%s", err, out)
				}
				for _, r := range doc.Devices {
					if !r.OK {
						t.Fatalf("%s over HTTPS: %+v", r.Name, r.Error)
					}
					if mode.name == "strict" && len(r.Requests) < 2 {
						t.Errorf("%s: strict mode, but the SDK did not poll: %+v", r.Name, r.Requests)
					}
					got[r.Name] = r.Result
				}
				for _, r := range mqttRunNode(t, s, mqttEndpoint, overMQTT) {
					if !r.OK {
						t.Fatalf("%s over MQTT: %s: %s", r.ID, r.Error.Name, r.Error.Message)
					}
					got[r.ID] = r.Result
				}
				return got
			}

			first := register(t)
			for _, d := range devices {
				env.checkFirst(t, d.id, first[d.id])
				env.between(t, s, d.id, d.c)
			}
			env.a.ResetCalls()
			env.b.ResetCalls()
			second := register(t)
			for _, d := range devices {
				t.Run(d.transport+"/"+d.c.name, func(t *testing.T) { env.checkSecond(t, s, d.id, d.c, second[d.id]) })
			}
		})
	}
}

// TestHubReprovisioningCurl: every re-provisioning case with curl, in fast
// and strict mode, the legacy api-version included; and a device of each
// X.509 kind, created in its hub with the identity it proved.
func TestHubReprovisioningCurl(t *testing.T) {
	t.Parallel()
	for _, mode := range serveModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			env := newHubEnv(t)
			s := e2e.StartServer(t, env.args(mode.args...)...)
			env.link(t, s)
			strict := mode.name == "strict"
			keys := map[string]string{}
			for _, c := range hubCases {
				id := "curl-" + c.name
				keys[id] = env.enroll(t, s, id, c)
				env.checkFirst(t, id, hubCurlRegister(t, s, strict, id, keys[id], "2021-06-01", ""))
				env.between(t, s, id, c)
			}
			env.a.ResetCalls()
			env.b.ResetCalls()
			for _, c := range hubCases {
				id := "curl-" + c.name
				v := "2021-06-01"
				if c.legacy {
					v = "2018-04-01"
				}
				t.Run(c.name, func(t *testing.T) { env.checkSecond(t, s, id, c, hubCurlRegister(t, s, strict, id, keys[id], v, "")) })
			}

			if strict {
				return
			}
			t.Run("x509 identities", func(t *testing.T) {
				dir := t.TempDir()
				self, selfKey := testutil.SelfSigned(t, pki.Options{CommonName: "hub-x509-self"})
				selfCert, selfKeyFile := testutil.WriteCredentials(t, dir, "self", selfKey, self)
				root := testutil.NewRoot(t, pki.Options{CommonName: "Hub Test Root"})
				inter := root.Intermediate(t, pki.Options{CommonName: "Hub Test Intermediate"})
				leaf, leafKey := inter.Leaf(t, pki.Options{CommonName: "hub-x509-chain"})
				chainCert, chainKeyFile := testutil.WriteCredentials(t, dir, "chain", leafKey, leaf, inter.Cert)
				interFile, _ := testutil.WriteCredentials(t, dir, "inter", inter.Key, inter.Cert)
				devCLI(t, "", "enrollment", "create", "--data", s.Dir, "--enrollment-id", "hub-x509-self", "--attestation-type", "x509",
					"--certificate-path", selfCert, "--iot-hubs", env.a.HostName, "--edge-enabled")
				devCLI(t, "", "enrollment-group", "create", "--data", s.Dir, "--enrollment-id", "hub-x509-group", "--attestation-type", "x509",
					"--certificate-path", interFile, "--iot-hubs", env.a.HostName)
				for _, d := range []struct{ id, cert, key string }{{"hub-x509-self", selfCert, selfKeyFile}, {"hub-x509-chain", chainCert, chainKeyFile}} {
					r := walkthroughCurl(t, "", "curl -sS -i --cacert '"+s.CAFile+"' --cert '"+d.cert+"' --key '"+d.key+
						"' -X PUT -H 'Content-Type: application/json' -d '{\"registrationId\":\""+d.id+"\"}' https://localhost:"+strconv.Itoa(s.Port)+"/"+s.IDScope+"/registrations/"+d.id+"/register?api-version=2021-06-01")
					if str(r.body, "status") != "assigned" || str(r.body, "registrationState.assignedHub") != env.a.HostName {
						t.Fatalf("X.509 registration of %s: %v", d.id, r.body)
					}
				}
				d, ok := env.a.Device("hub-x509-self")
				if !ok || d.Auth.Type != hub.AuthSelfSigned || d.Auth.X509Thumbprint.PrimaryThumbprint != pki.SHA256Thumbprint(self) || !d.IotEdge {
					t.Errorf("self-signed device in the hub: %+v, want selfSigned with its thumbprint, an Edge device", d)
				}
				if d, ok := env.a.Device("hub-x509-chain"); !ok || d.Auth.Type != hub.AuthCertificateAuthority {
					t.Errorf("group device in the hub: %+v, want certificateAuthority", d)
				}
			})
		})
	}
}

// TestHubWebhooks: custom allocation and the registry webhook, end to end:
// enrolled and linked with the CLI, the webhooks served over TLS by a CA
// dpsd trusts through --outbound-ca-file, the device's payload reaching the
// allocation webhook and the webhook's payload reaching the device, the
// registry webhook's events verified by their signature.
func TestHubWebhooks(t *testing.T) {
	t.Parallel()
	env := newHubEnv(t)
	const secret = "a registry webhook secret"
	registry := hubtest.NewRegistryWebhook(t, hubtest.Options{CA: env.ca}, secret)
	alloc := hubtest.NewAllocationWebhook(t, hubtest.Options{CA: env.ca})
	alloc.Respond(func(r *allocation.CustomRequest) (int, []byte) {
		b, _ := json.Marshal(map[string]any{"iotHubHostName": "broker.factory.example", "payload": map[string]any{"echo": r.DeviceRuntimeContext.Payload},
			"initialTwin": map[string]any{"tags": map[string]any{"chosenBy": "webhook"}}})
		return http.StatusOK, b
	})
	s := e2e.StartServer(t, env.args()...)
	devCLI(t, "", "linked-hub", "create", "--data", s.Dir, "--hub-name", "broker.factory.example", "--device-registry", "webhook",
		"--registry-webhook-url", registry.URL+"/dpsd", "--registry-webhook-secret", secret)
	devCLI(t, "", "linked-hub", "create", "--data", s.Dir, "--hub-name", "other.factory.example")
	key := str(devCLIJSON(t, "", "enrollment", "create", "--data", s.Dir, "--enrollment-id", "sensor-0042", "--attestation-type", "symmetrickey",
		"--allocation-policy", "custom", "--webhook-url", alloc.URL+"/api/allocate?code=FUNCTION-KEY", "--api-version", "2021-10-01",
		"--initial-twin-tags", `{"chosenBy":"enrollment"}`, "-o", "json"), "attestation.symmetricKey.primaryKey")

	state := hubCurlRegister(t, s, false, "sensor-0042", key, "2021-06-01", `{"model":"t-1000"}`)
	devWant(t, "registrationState", state, map[string]string{"assignedHub": "broker.factory.example", "status": "assigned", "payload.echo.model": "t-1000"})
	reqs := alloc.Requests()
	if len(reqs) != 1 || hubJSON(reqs[0].DeviceRuntimeContext.Payload) != `{"model":"t-1000"}` || len(reqs[0].LinkedHubs) != 2 {
		t.Fatalf("allocation requests %s", hubJSON(reqs))
	}
	if c := alloc.Calls()[0]; c.Query != "code=FUNCTION-KEY" || !strings.HasPrefix(c.Header.Get("User-Agent"), "dpsd/") {
		t.Errorf("allocation call ?%s, User-Agent %q", c.Query, c.Header.Get("User-Agent"))
	}
	evs := registry.Events()
	if len(evs) != 1 {
		t.Fatalf("the registry webhook verified %d events, want 1; calls %+v", len(evs), registry.Calls())
	}
	ev := evs[0]
	if ev.Type != hub.EventDeviceAssigned || ev.Hub != "broker.factory.example" || ev.DeviceID != "sensor-0042" || ev.Authentication.Type != hub.AuthSAS ||
		ev.Authentication.SymmetricKey.PrimaryKey != key || hubJSON(ev.InitialTwin) != `{"tags":{"chosenBy":"webhook"}}` || hubJSON(ev.Payload) != `{"model":"t-1000"}` {
		t.Errorf("event %s", hubJSON(ev))
	}
	c := registry.Calls()[0]
	if c.Status != http.StatusNoContent || !hub.VerifySignature([]byte(secret), c.Body, c.Header.Get(hub.SignatureHeader)) || strings.Contains(s.Logs(), key) {
		t.Errorf("delivery: status %d, signature %q; or the device key is in the log", c.Status, c.Header.Get(hub.SignatureHeader))
	}
	if rec, _ := devRecord(t, s, "sensor-0042"); str(rec, "appliedTwin.tags.chosenBy") != "webhook" {
		t.Errorf("registration record %v, want the webhook's twin applied", rec)
	}
	if out := devCLI(t, "", "registration", "show", "--data", s.Dir, "--registration-id", "sensor-0042"); !regexp.MustCompile(`(?m)^appliedTwinTags: +\{"chosenBy":"webhook"\}$`).MatchString(out) {
		t.Errorf("registration show does not show the applied twin:\n%s", out)
	}
}
