package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/server/servertest"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpmsim"
)

// TestDeviceRegisterTPM runs `dpsd device register --attestation tpm --tpm
// HOST:PORT` with Microsoft's reference TPM served on the simulator
// protocol, against dpsd in-process with the TPM's endorsement key
// enrolled, and the ways it refuses to start.
func TestDeviceRegisterTPM(t *testing.T) {
	sim, ek, _ := tpmsim.OpenProvisioned(t)
	tpmAddr := tpmsim.Serve(t, sim)
	srv := servertest.Start(t, server.Config{})
	scope := srv.State.IDScope
	in := provtest.Instance{T: t, Store: srv.Store(), Scope: scope}
	in.LinkHub(provtest.Hub1, 1, true)
	regID := tpm.RegistrationID(ek)
	in.PutIndividual(provtest.TPMIndividual(regID, ek))
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, srv.Instance().ServerCACertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"device", "register", "--endpoint", srv.DeviceAddr, "--id-scope", scope, "--ca-file", ca}
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := run(args, &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }})
		return out.String(), errOut.String(), code
	}

	t.Run("registers", func(t *testing.T) {
		out, errOut, code := run(append(base, "--attestation", "tpm", "--tpm", tpmAddr, "-o", "json")...)
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		if st["registrationId"] != regID || st["status"] != "assigned" || st["assignedHub"] != provtest.Hub1 {
			t.Errorf("state %s", out)
		}
		if strings.Contains(out, "authenticationKey") {
			t.Errorf("the hub key blob is printed: %s", out)
		}
		// --tpm alone implies TPM attestation; the text output says where the key is.
		out, errOut, code = run(append(base, "--tpm", tpmAddr)...)
		if code != 0 || !strings.Contains(out, "hubKey") || !strings.Contains(out, "0x81000100") {
			t.Errorf("exit %d\n%s\n%s", code, out, errOut)
		}
	})

	other := tpm.RegistrationID([]byte("other"))
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"not enrolled", []string{"--tpm", tpmAddr, "--registration-id", other}, `no individual enrollment for registration ID "` + other + `" (this TPM's default registration ID, derived from its endorsement key, is "` + regID + `")`},
		{"over MQTT", []string{"--tpm", tpmAddr, "--transport", "mqtt"}, "TPM attestation is not available over mqtt"},
		{"TPM and key", []string{"--tpm", tpmAddr, "--registration-id", other, "--symmetric-key", "AAAA"}, "give one of --cert and --key (X.509), --symmetric-key / --group-key, or --tpm"},
		{"attestation without credentials", []string{"--attestation", "x509"}, "--attestation x509 needs its credentials"},
		{"unknown attestation", []string{"--attestation", "sas"}, `unknown attestation "sas"`},
		{"no simulator there", []string{"--attestation", "tpm", "--tpm", "127.0.0.1:1"}, "TPM simulator at 127.0.0.1:1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := run(append(base, c.args...)...)
			if code == 0 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "dpsd: hint: ") {
				t.Errorf("exit %d, stderr lacks %q:\n%s\n%s", code, c.want, out, errOut)
			}
		})
	}
}
