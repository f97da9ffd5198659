package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpm/tpmtest"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

// TestDeviceRegisterTPM runs `dpsd device register --attestation tpm --tpm
// HOST:PORT` with Microsoft's reference TPM served on the simulator protocol,
// against a stand-in service that challenges the TPM with internal/tpm's
// blobs and verifies what it signs.
func TestDeviceRegisterTPM(t *testing.T) {
	sim, ek, _ := tpmsim.OpenProvisioned(t)
	tpmAddr := tpmsim.Serve(t, sim)
	const scope = "0ne00111111"
	start := func(f *tpmtest.FakeDPS) []string {
		srv := httptest.NewTLSServer(f)
		t.Cleanup(srv.Close)
		ca := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
		return []string{"device", "register", "--endpoint", srv.Listener.Addr().String(), "--id-scope", scope, "--ca-file", ca}
	}
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(args, &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		return out.String(), errOut.String(), code
	}
	regID := tpm.RegistrationID(ek)

	t.Run("registers", func(t *testing.T) {
		f := &tpmtest.FakeDPS{IDScope: scope, EndorsementKey: base64.StdEncoding.EncodeToString(ek), Assigning: true}
		out, errOut, code := run(append(start(f), "--attestation", "tpm", "--tpm", tpmAddr, "-o", "json")...)
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s\nservice: %q", code, out, errOut, f.Problems())
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		if st["registrationId"] != regID || st["status"] != "assigned" || st["assignedHub"] != tpmtest.Hub {
			t.Errorf("state %s", out)
		}
		if strings.Contains(out, "authenticationKey") {
			t.Errorf("the hub key blob is printed: %s", out)
		}
		if f.HubKey(regID) == nil || len(f.Problems()) != 0 {
			t.Errorf("service problems: %q", f.Problems())
		}
		// --tpm alone implies TPM attestation; the text output says where the key is.
		out, errOut, code = run(append(start(&tpmtest.FakeDPS{IDScope: scope}), "--tpm", tpmAddr)...)
		if code != 0 || !strings.Contains(out, "hubKey") || !strings.Contains(out, "0x81000100") {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
	})

	other := tpm.RegistrationID([]byte("other"))
	for _, c := range []struct {
		name string
		args []string
		f    *tpmtest.FakeDPS
		want string
	}{
		{"unknown EK", []string{"--tpm", tpmAddr}, &tpmtest.FakeDPS{IDScope: scope, EndorsementKey: base64.StdEncoding.EncodeToString([]byte("another EK, not this TPM's"))}, "no enrollment for this endorsement key (HTTP 404, errorCode 404201"},
		{"over MQTT", []string{"--tpm", tpmAddr, "--transport", "mqtt"}, nil, "TPM attestation is not available over mqtt"},
		{"TPM and key", []string{"--tpm", tpmAddr, "--registration-id", other, "--symmetric-key", "AAAA"}, nil, "give one of --cert and --key (X.509), --symmetric-key / --group-key, or --tpm"},
		{"attestation without credentials", []string{"--attestation", "x509"}, nil, "--attestation x509 needs its credentials"},
		{"unknown attestation", []string{"--attestation", "sas"}, nil, `unknown attestation "sas"`},
		{"no simulator there", []string{"--attestation", "tpm", "--tpm", "127.0.0.1:1"}, nil, "TPM simulator at 127.0.0.1:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"device", "register", "--endpoint", "127.0.0.1:1", "--id-scope", scope, "--ca-file", "/nonexistent"}
			if c.f != nil {
				args = start(c.f)
			}
			out, errOut, code := run(append(args, c.args...)...)
			if code == 0 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "dpsd: hint: ") {
				t.Errorf("exit %d, stderr lacks %q:\n%s\n%s", code, c.want, out, errOut)
			}
		})
	}
}
