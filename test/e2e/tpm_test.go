package e2e_test

// TPM attestation end to end, with Microsoft's reference TPM
// (internal/tpmsim) served on the TPM simulator's TCP protocol and dpsd's
// binary with an IoT hub double that creates the devices: the official
// Azure Node TPM client (azure-iot-security-tpm 1.9.3 on tss.js, simulator
// mode, with the Node HTTP transport; port 443 only), and `dpsd device
// register --tpm HOST:PORT`. Each ends with the TPM signing with the key of
// the device's identity in the hub.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/hub/hubtest"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpmsim"
	"github.com/dpsd/dpsd/test/e2e"
)

type nodeTPMOutput struct {
	TPM struct {
		EndorsementKey, StorageRootKey, RegistrationID string
	}
	OK     bool
	Result *struct {
		RegistrationState struct {
			RegistrationID, AssignedHub, DeviceID, Status string
		}
	}
	Error     map[string]any
	Signature string
	Requests  []struct {
		Method, Path, Authorization string
		Status                      int
	}
}

// tpmEnroll links hub A of env to s and enrolls an EK, under its default
// registration ID, on that hub, with the CLI as an operator would.
func tpmEnroll(t *testing.T, env *hubEnv, s *e2e.Server, ek []byte) string {
	t.Helper()
	devCLI(t, "", append(hubLocal(s), "linked-hub", "create", "--connection-string", env.a.ConnectionString(), "--device-registry", "azure-iothub")...)
	regID := tpm.RegistrationID(ek)
	e := devCLIJSON(t, "", append(hubLocal(s), "enrollment", "create", "--enrollment-id", regID, "--attestation-type", "tpm",
		"--endorsement-key", base64.StdEncoding.EncodeToString(ek), "--iot-hubs", env.a.HostName, "-o", "json")...)
	if str(e, "attestation.type") != "tpm" {
		t.Fatalf("enrollment create printed %v", e)
	}
	return regID
}

// tpmHubKey is the primary key of the device's sas identity in hub h.
func tpmHubKey(t *testing.T, h *hubtest.IoTHub, deviceID string) []byte {
	t.Helper()
	d, ok := h.Device(deviceID)
	if !ok || d.Auth.Type != "sas" || d.Auth.SymmetricKey == nil {
		t.Fatalf("the hub's identity of %s: %+v (found %v), want sas", deviceID, d, ok)
	}
	k, err := base64.StdEncoding.DecodeString(d.Auth.SymmetricKey.PrimaryKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func tpmHMAC(key []byte, s string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TestTPMNodeClient registers a TPM with the official Node client against
// dpsd on 127.0.0.1:443, in the default mode and in strict mode. The TPM
// is fresh: the Node client creates its EK and SRK, with the templates the
// Go client uses (the EK dpsd enrolls is derived from the TPM's seed with
// the Go client's template before the Node client runs, and is the one it
// sends). It decrypts the hub key: the TPM's HMAC of a probe is the HMAC
// with the key the hub double received for the device's identity.
func TestTPMNodeClient(t *testing.T) {
	if _, err := os.Stat(filepath.Join(e2e.NodeDir(t), "node_modules", "azure-iot-security-tpm", "package.json")); err != nil {
		t.Fatal("azure-iot-security-tpm is not installed: run npm ci --ignore-scripts --prefix test/node")
	}
	sim := tpmsim.Open(t)
	ek := tpmPrimary(t, sim, tpm2.TPMRHEndorsement, clienttpm.EKTemplate())
	srk := tpmPrimary(t, sim, tpm2.TPMRHOwner, clienttpm.SRKTemplate())
	tpmAddr := tpmsim.Serve(t, sim)

	for _, mode := range []struct {
		name string
		args []string
		flow []string // method, Authorization and status of each request
	}{
		{"fast", nil, []string{"PUT  401", "PUT SharedAccessSignature 202"}},
		{"strict", []string{"--azure-strict", "--retry-after", "1"}, []string{"PUT  401", "PUT SharedAccessSignature 202", "GET SharedAccessSignature 200"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			env := newHubEnv(t)
			s := e2e.StartServer443(t, env.args(mode.args...)...)
			regID := tpmEnroll(t, env, s, ek)
			const probe = "dpsd probe signed with the hub key"
			out := e2e.RunNode(t, "tpm-device.js", map[string]string{
				"DPS_PROVISIONING_HOST": "127.0.0.1",
				"DPS_ID_SCOPE":          s.IDScope,
				"DPS_TPM":               tpmAddr,
				"DPS_SIGN":              probe,
				"NODE_EXTRA_CA_CERTS":   s.CAFile,
			})
			var got nodeTPMOutput
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("tpm-device.js printed no JSON: %v\n%s", err, out)
			}
			if !got.OK {
				t.Fatalf("the Node TPM client failed: %v\n%s", got.Error, out)
			}
			if nodeEK, _ := base64.StdEncoding.DecodeString(got.TPM.EndorsementKey); !bytes.Equal(nodeEK, ek) {
				t.Errorf("the Node client's EK is not the one the Go client's template gives")
			}
			if nodeSRK, _ := base64.StdEncoding.DecodeString(got.TPM.StorageRootKey); !bytes.Equal(nodeSRK, srk) {
				t.Errorf("the Node client's SRK is not the one the Go client's template gives")
			}
			if got.TPM.RegistrationID != regID {
				t.Errorf("Node derived registration ID %q, dpsd %q", got.TPM.RegistrationID, regID)
			}
			st := got.Result.RegistrationState
			if st.Status != "assigned" || st.RegistrationID != regID || st.DeviceID != regID || st.AssignedHub != env.a.HostName {
				t.Errorf("registration state %+v", st)
			}
			var flow []string
			for _, r := range got.Requests {
				flow = append(flow, r.Method+" "+r.Authorization+" "+strconv.Itoa(r.Status))
			}
			if !slices.Equal(flow, mode.flow) {
				t.Errorf("requests %q, want %q", flow, mode.flow)
			}
			if got.Signature != tpmHMAC(tpmHubKey(t, env.a, regID), probe) {
				t.Errorf("the TPM's signature %q is not the HMAC with the key of the device's identity in the hub", got.Signature)
			}
		})
	}
}

// tpmPrimary is the public area of the primary key template gives in the
// hierarchy of sim, derived from the TPM's seed before any client runs; the
// key is not kept.
func tpmPrimary(t *testing.T, sim *tpmsim.Simulator, hierarchy tpm2.TPMHandle, template tpm2.TPMTPublic) []byte {
	t.Helper()
	cp, err := (tpm2.CreatePrimary{PrimaryHandle: hierarchy, InPublic: tpm2.New2B(template)}).Execute(sim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (tpm2.FlushContext{FlushHandle: cp.ObjectHandle}).Execute(sim); err != nil {
		t.Fatal(err)
	}
	return tpm2.Marshal(cp.OutPublic)
}

// TestTPMGoClientCLI registers a TPM with `dpsd device register --tpm
// HOST:PORT`, dpsd's binary on both sides, in both modes; the TPM then
// signs with the key of the device's identity in the hub.
func TestTPMGoClientCLI(t *testing.T) {
	sim, ek, _ := tpmsim.OpenProvisioned(t)
	tpmAddr := tpmsim.Serve(t, sim)
	for _, mode := range devModes {
		t.Run(mode.name, func(t *testing.T) {
			env := newHubEnv(t)
			s := e2e.StartServer(t, env.args(slices.Concat(mode.args, []string{"--retry-after", "1"})...)...)
			regID := tpmEnroll(t, env, s, ek)
			st := devCLIJSON(t, "", "device", "register", "--data", s.Dir, "--attestation", "tpm", "--tpm", tpmAddr, "-o", "json")
			devWant(t, "device register", st, map[string]string{"registrationId": regID, "status": "assigned", "assignedHub": env.a.HostName, "deviceId": regID})
			out := devCLI(t, "", "device", "register", "--data", s.Dir, "--tpm", tpmAddr)
			if !strings.Contains(out, "in the TPM at 0x81000100") || !strings.Contains(out, "reprovisionedToInitialAssignment") {
				t.Errorf("the second registration printed:\n%s", out)
			}
			sig, err := clienttpm.New(sim).Sign([]byte("probe"))
			if err != nil {
				t.Fatal(err)
			}
			hubKey := tpmHubKey(t, env.a, regID)
			if base64.StdEncoding.EncodeToString(sig) != tpmHMAC(hubKey, "probe") {
				t.Error("the TPM does not sign with the key of the device's identity in the hub")
			}
			// The record shows the outcome, and neither the hub key nor its blob.
			rec := devCLI(t, "", append(hubLocal(s), "registration", "show", "--registration-id", regID)...)
			if !strings.Contains(rec, "reprovisionedToInitialAssignment") || strings.Contains(rec, "authenticationKey") ||
				strings.Contains(rec, base64.StdEncoding.EncodeToString(hubKey)) {
				t.Errorf("registration show printed:\n%s", rec)
			}
			if strings.Contains(s.Logs(), base64.StdEncoding.EncodeToString(hubKey)) {
				t.Error("the server log holds the hub key")
			}
		})
	}
}
