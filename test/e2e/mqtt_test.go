package e2e_test

// The MQTT transport of the real dpsd binary, driven by the official Azure
// IoT Node.js device SDK (azure-iot-provisioning-device-mqtt 1.8.1, Mqtt and
// MqttWs, through test/node/mqtt-device.js) and by `dpsd device register
// --transport mqtt|mqtt-ws`. The raw protocol (runMosquitto clients) is in
// mqtt_mosquitto_test.go.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/internal/testutil"
	"github.com/dpsd/dpsd/test/e2e"
)

const mqttHub = "mqtt-hub-1.azure-devices.net"

// startMQTTServer starts dpsd with its MQTT listener on a free port of
// 127.0.0.1 (never the default :8883, which parallel tests would share; the
// harness does the same), with HTTPS on port 443 for clients that cannot
// dial another port.
func startMQTTServer(t *testing.T, port443 bool, extra ...string) (*e2e.Server, string) {
	t.Helper()
	args := append([]string{"--mqtt-addr", "127.0.0.1:0"}, extra...)
	var s *e2e.Server
	if port443 {
		s = e2e.StartServer443(t, args...)
	} else {
		s = e2e.StartServer(t, args...)
	}
	if !strings.HasPrefix(s.MQTTEndpoint, "localhost:") {
		t.Fatalf("server.json mqttEndpoint %q, want localhost:PORT", s.MQTTEndpoint)
	}
	return s, s.MQTTEndpoint
}

// mqttDevice is a device enrolled through the service API.
type mqttDevice struct {
	ID           string `json:"id"`
	Transport    string `json:"transport,omitempty"`
	Cert         string `json:"cert,omitempty"` // PEM file, leaf first
	Key          string `json:"key,omitempty"`
	SymmetricKey string `json:"symmetricKey,omitempty"` // base64
	Payload      any    `json:"payload,omitempty"`
	group        string
}

func mqttSvcPut(t *testing.T, c *svcclient.Client, path string, body any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Do(ctx, svcclient.Request{Method: http.MethodPut, Path: path, Body: body}, nil); err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
}

// enrollMQTTDevices links a hub and enrolls one device of each kind: X.509
// self-signed (individual), X.509 chain in a group (intermediate as signing
// certificate, root uploaded verified), symmetric key individual and
// group-derived. It also returns two devices the service must refuse.
func enrollMQTTDevices(t *testing.T, s *e2e.Server) (good, bad []mqttDevice) {
	t.Helper()
	c := s.Client(t)
	yes := true
	mqttSvcPut(t, c, "/linkedHubs/"+mqttHub, dps.LinkedHubBody{
		ConnectionString: "HostName=" + mqttHub + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32), ApplyAllocationPolicy: &yes})
	dir := t.TempDir()

	self, selfKey := testutil.SelfSigned(t, pki.Options{CommonName: "mqtt-x509-self"})
	selfCert, selfKeyFile := testutil.WriteCredentials(t, dir, "self", selfKey, self)
	mqttSvcPut(t, c, "/enrollments/mqtt-x509-self", dps.IndividualEnrollment{RegistrationID: "mqtt-x509-self", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{
		Type: "x509", X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(self))}}}}}})

	root := testutil.NewRoot(t, pki.Options{CommonName: "MQTT Test Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "MQTT Test Intermediate"})
	leaf, leafKey := inter.Leaf(t, pki.Options{CommonName: "mqtt-x509-chain"})
	chainCert, chainKey := testutil.WriteCredentials(t, dir, "chain", leafKey, leaf, inter.Cert, root.Cert)
	mqttSvcPut(t, c, "/certificates/mqtt-test-root", dps.CertificateBody{Certificate: string(pki.EncodePEM(root.Cert)), IsVerified: &yes})
	mqttSvcPut(t, c, "/enrollmentGroups/mqtt-x509-group", dps.EnrollmentGroup{EnrollmentGroupID: "mqtt-x509-group", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{
		Type: "x509", X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: string(pki.EncodePEM(inter.Cert))}}}}}})

	symKey := sas.NewKey(32)
	mqttSvcPut(t, c, "/enrollments/mqtt-sym", dps.IndividualEnrollment{RegistrationID: "mqtt-sym", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{
		Type: "symmetricKey", SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: symKey, SecondaryKey: sas.NewKey(32)}}}})
	groupKey := sas.NewKey(32)
	mqttSvcPut(t, c, "/enrollmentGroups/mqtt-sym-group", dps.EnrollmentGroup{EnrollmentGroupID: "mqtt-sym-group", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{
		Type: "symmetricKey", SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: groupKey, SecondaryKey: sas.NewKey(32)}}}})
	gk, _ := base64.StdEncoding.DecodeString(groupKey)
	derived := base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(gk, "mqtt-sym-group-dev-1"))

	unknown, unknownKey := testutil.SelfSigned(t, pki.Options{CommonName: "mqtt-x509-unknown"})
	unknownCert, unknownKeyFile := testutil.WriteCredentials(t, dir, "unknown", unknownKey, unknown)

	good = []mqttDevice{
		{ID: "mqtt-x509-self", Cert: selfCert, Key: selfKeyFile, Payload: map[string]any{"modelId": "dtmi:dpsd:test;1"}},
		{ID: "mqtt-x509-chain", Cert: chainCert, Key: chainKey, group: "mqtt-x509-group"},
		{ID: "mqtt-sym", SymmetricKey: symKey},
		{ID: "mqtt-sym-group-dev-1", SymmetricKey: derived, group: "mqtt-sym-group"},
	}
	bad = []mqttDevice{
		{ID: "mqtt-sym", SymmetricKey: sas.NewKey(32)},
		{ID: "mqtt-x509-unknown", Cert: unknownCert, Key: unknownKeyFile},
	}
	return good, bad
}

func mqttMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mqttNodeResult is one device's outcome printed by mqtt-device.js.
type mqttNodeResult struct {
	ID        string         `json:"id"`
	Transport string         `json:"transport"`
	OK        bool           `json:"ok"`
	Result    map[string]any `json:"result"`
	MS        int            `json:"ms"`
	Error     *struct {
		Name    string         `json:"name"`
		Message string         `json:"message"`
		Result  map[string]any `json:"result"`
	} `json:"error"`
}

func mqttRunNode(t *testing.T, s *e2e.Server, host string, devices []mqttDevice) []mqttNodeResult {
	t.Helper()
	b, _ := json.Marshal(devices)
	env := s.NodeEnv()
	env["DPS_PROVISIONING_HOST"] = host
	env["DPS_DEVICES"] = string(b)
	out := e2e.RunNode(t, "mqtt-device.js", env)
	var doc struct {
		Devices []mqttNodeResult `json:"devices"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || len(doc.Devices) != len(devices) {
		t.Fatalf("mqtt-device.js printed %q (%v)", out, err)
	}
	return doc.Devices
}

// mqttCheckNode asserts the SDK's outcomes: the good devices assigned to the
// linked hub, the bad ones refused with UnauthorizedError and the DPS error
// body the SDK received on res/401.
func mqttCheckNode(t *testing.T, got []mqttNodeResult, good, bad []mqttDevice) {
	t.Helper()
	for i, d := range good {
		r := got[i]
		if !r.OK {
			t.Errorf("%s over %s: %s: %s (%v)", d.ID, r.Transport, r.Error.Name, r.Error.Message, r.Error.Result)
			continue
		}
		if r.Result["assignedHub"] != mqttHub || r.Result["deviceId"] != d.ID || r.Result["status"] != "assigned" {
			t.Errorf("%s over %s: %v", d.ID, r.Transport, r.Result)
		}
		if d.group != "" {
			var g any
			for _, k := range []string{"x509", "symmetricKey"} {
				if m, ok := r.Result[k].(map[string]any); ok {
					g = m["enrollmentGroupId"]
				}
			}
			if g != d.group {
				t.Errorf("%s: enrollmentGroupId %v, want %s", d.ID, g, d.group)
			}
		}
	}
	for i, d := range bad {
		r := got[len(good)+i]
		if r.OK || r.Error.Name != "UnauthorizedError" {
			t.Errorf("%s over %s: %+v, want UnauthorizedError", d.ID, r.Transport, r)
			continue
		}
		if code, _ := r.Error.Result["errorCode"].(float64); code != 401002 || r.Error.Result["trackingId"] == nil {
			t.Errorf("%s: error body %v, want errorCode 401002 and a trackingId", d.ID, r.Error.Result)
		}
	}
}

func mqttWithTransport(devices []mqttDevice, transport string) []mqttDevice {
	out := make([]mqttDevice, len(devices))
	for i, d := range devices {
		d.Transport = transport
		out[i] = d
	}
	return out
}

// serveModes are the flags of the fast and the strict mode of `dpsd serve`.
var serveModes = []struct {
	name string
	args []string
}{{"fast", nil}, {"strict", []string{"--azure-strict", "--retry-after", "1"}}}

// TestMQTTNodeSDK: the Node SDK's Mqtt transport registers every kind of
// device, in fast and strict mode, and reports refusals as the service
// answered them.
func TestMQTTNodeSDK(t *testing.T) {
	for _, mode := range serveModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s, endpoint := startMQTTServer(t, false, mode.args...)
			good, bad := enrollMQTTDevices(t, s)
			all := mqttWithTransport(append(append([]mqttDevice{}, good...), bad...), "mqtt")
			got := mqttRunNode(t, s, endpoint, all)
			mqttCheckNode(t, got, good, bad)
			logs := s.Logs()
			for _, d := range good {
				if !strings.Contains(logs, "transport=mqtt registrationId="+d.ID) {
					t.Errorf("no registration of %s over transport=mqtt in the log", d.ID)
				}
			}
			if mode.name == "strict" && !strings.Contains(logs, "request=operationstatus") {
				t.Errorf("strict mode: the SDK did not poll")
			}
		})
	}
}

// TestMQTTWsNodeSDK: the Node SDK's MqttWs transport, which always dials
// wss://HOST:443/$iothub/websocket, against dpsd on 127.0.0.1:443.
func TestMQTTWsNodeSDK(t *testing.T) {
	for _, mode := range serveModes {
		t.Run(mode.name, func(t *testing.T) {
			s, _ := startMQTTServer(t, true, mode.args...)
			good, bad := enrollMQTTDevices(t, s)
			all := mqttWithTransport(append(append([]mqttDevice{}, good...), bad...), "mqtt-ws")
			got := mqttRunNode(t, s, "localhost", all)
			mqttCheckNode(t, got, good, bad)
			for _, d := range good {
				if !strings.Contains(s.Logs(), "transport=mqtt-ws registrationId="+d.ID) {
					t.Errorf("no registration of %s over transport=mqtt-ws in the log", d.ID)
				}
			}
		})
	}
}

// TestMQTTDeviceCommand: `dpsd device register --transport mqtt|mqtt-ws`,
// endpoints discovered from the local server's server.json.
func TestMQTTDeviceCommand(t *testing.T) {
	t.Parallel()
	s, endpoint := startMQTTServer(t, false)
	good, bad := enrollMQTTDevices(t, s)
	for _, transport := range []string{"mqtt", "mqtt-ws", "https"} {
		for _, d := range good {
			args := []string{"device", "register", "--data", s.Dir, "--transport", transport, "--registration-id", d.ID, "-o", "json", "--timeout", "30s"}
			if d.SymmetricKey != "" {
				args = append(args, "--symmetric-key", d.SymmetricKey)
			} else {
				args = append(args, "--cert", d.Cert, "--key", d.Key)
			}
			out, err := exec.Command(s.Bin, args...).CombinedOutput()
			if err != nil {
				t.Errorf("dpsd %s: %v\n%s", strings.Join(args, " "), err, out)
				continue
			}
			var st map[string]any
			if err := json.Unmarshal(out, &st); err != nil || st["status"] != "assigned" || st["assignedHub"] != mqttHub {
				t.Errorf("%s over %s: %s", d.ID, transport, out)
			}
		}
	}
	// A refusal: the service's reason, with the CLI's hint, exit 1.
	out, err := exec.Command(s.Bin, "device", "register", "--data", s.Dir, "--transport", "mqtt", "--endpoint", endpoint,
		"--registration-id", bad[0].ID, "--symmetric-key", bad[0].SymmetricKey).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "dpsd: error: the SAS token signature matches neither") || !strings.Contains(string(out), "HTTP 401, errorCode 401002") {
		t.Errorf("refused device: %v\n%s", err, out)
	}
	for _, transport := range []string{"mqtt", "mqtt-ws"} {
		if !strings.Contains(s.Logs(), "transport="+transport+" registrationId=mqtt-sym ") {
			t.Errorf("no registration over %s in the log", transport)
		}
	}
}

// TestMQTTListenerOff: --mqtt-addr "" serves no MQTT listener (MQTT over
// WebSocket stays on the HTTPS listener), and `dpsd device register
// --transport mqtt` says so.
func TestMQTTListenerOff(t *testing.T) {
	t.Parallel()
	s := e2e.StartServer(t, "--mqtt-addr", "")
	if s.MQTTEndpoint != "" {
		t.Fatalf("server.json mqttEndpoint %q, want none", s.MQTTEndpoint)
	}
	if strings.Contains(s.Logs(), "listener=mqtt") {
		t.Errorf("an MQTT listener started:\n%s", s.Logs())
	}
	good, _ := enrollMQTTDevices(t, s)
	out, err := exec.Command(s.Bin, "device", "register", "--data", s.Dir, "--transport", "mqtt", "--registration-id", good[2].ID, "--symmetric-key", good[2].SymmetricKey).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "dpsd: error: the local server has no MQTT listener") || !strings.Contains(string(out), "dpsd: hint: ") {
		t.Errorf("--transport mqtt without a listener: %v\n%s", err, out)
	}
	out, err = exec.Command(s.Bin, "device", "register", "--data", s.Dir, "--transport", "mqtt-ws", "--registration-id", good[2].ID, "--symmetric-key", good[2].SymmetricKey).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "assigned") {
		t.Errorf("--transport mqtt-ws: %v\n%s", err, out)
	}
	out, err = exec.Command(s.Bin, "device", "register", "--data", s.Dir, "--transport", "amqp", "--registration-id", "x", "--symmetric-key", good[2].SymmetricKey).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown transport "amqp"`) {
		t.Errorf("--transport amqp: %v\n%s", err, out)
	}
}
