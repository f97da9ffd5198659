package e2e_test

// The official Azure Node TPM client (azure-iot-security-tpm 1.9.3 on tss.js,
// simulator mode) with the Node HTTP transport, on Microsoft's reference TPM
// served on the simulator's TCP protocol, against a stand-in service
// (internal/tpm/tpmtest) that challenges it with dpsd's activation blobs.
// dpsd's own pipeline does not serve TPM registrations yet; this proves
// that the blobs and the flow are what the official client accepts.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-tpm/tpm2"

	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/tpm"
	"github.com/dpsd/dpsd/internal/tpm/tpmtest"
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

func TestNodeTPMDevice(t *testing.T) {
	if _, err := os.Stat(filepath.Join(e2e.NodeDir(t), "node_modules", "azure-iot-security-tpm", "package.json")); err != nil {
		t.Fatal("azure-iot-security-tpm is not installed: run npm ci --ignore-scripts --prefix test/node")
	}
	sim := tpmsim.Open(t) // a fresh TPM: the Node client creates the EK and SRK itself
	tpmAddr := tpmsim.Serve(t, sim)
	const scope = "0ne00111111"
	f := &tpmtest.FakeDPS{IDScope: scope, Assigning: true}
	srv := httptest.NewUnstartedServer(f)
	srv.Listener = e2e.Listen443(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}

	const probe = "dpsd probe signed with the hub key"
	out := e2e.RunNode(t, "tpm-device.js", map[string]string{
		"DPS_PROVISIONING_HOST": "127.0.0.1",
		"DPS_ID_SCOPE":          scope,
		"DPS_TPM":               tpmAddr,
		"DPS_SIGN":              probe,
		"NODE_EXTRA_CA_CERTS":   ca,
	})
	var got nodeTPMOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("tpm-device.js printed no JSON: %v\n%s", err, out)
	}
	if !got.OK {
		t.Fatalf("the Node TPM client failed: %v\nservice: %q\n%s", got.Error, f.Problems(), out)
	}

	// The keys it created are the Azure clients' (the Go client's templates).
	ekBytes, _ := base64.StdEncoding.DecodeString(got.TPM.EndorsementKey)
	srkBytes, _ := base64.StdEncoding.DecodeString(got.TPM.StorageRootKey)
	for name, c := range map[string]struct {
		pub      []byte
		template tpm2.TPMTPublic
	}{"EK": {ekBytes, clienttpm.EKTemplate()}, "SRK": {srkBytes, clienttpm.SRKTemplate()}} {
		p, err := tpm.ParsePublic(c.pub)
		if err != nil {
			t.Fatalf("%s from the Node client: %v", name, err)
		}
		withoutUnique, err := tpm2.Unmarshal[tpm2.TPMTPublic](c.pub[2:])
		if err != nil {
			t.Fatal(err)
		}
		withoutUnique.Unique = c.template.Unique
		if !bytes.Equal(tpm2.Marshal(withoutUnique), tpm2.Marshal(c.template)) {
			t.Errorf("the Node client's %s (%s) was not made from the Go client's template", name, p.Algorithm())
		}
	}
	goEK, err := clienttpm.New(sim).EndorsementKey()
	if err != nil || !bytes.Equal(goEK, ekBytes) {
		t.Errorf("the Go client reads another EK from the same TPM (%v)", err)
	}

	regID := tpm.RegistrationID(ekBytes)
	if got.TPM.RegistrationID != regID {
		t.Errorf("Node derived registration ID %q, internal/tpm %q", got.TPM.RegistrationID, regID)
	}
	st := got.Result.RegistrationState
	if st.Status != "assigned" || st.RegistrationID != regID || st.AssignedHub != tpmtest.Hub {
		t.Errorf("registration state %+v", st)
	}
	if p := f.Problems(); len(p) != 0 {
		t.Errorf("the service refused something: %q", p)
	}
	// Unsigned register → 401 challenge; signed register → 202; signed poll → 200.
	var flow []string
	for _, r := range got.Requests {
		flow = append(flow, r.Method+" "+r.Authorization+" "+strconv.Itoa(r.Status))
	}
	want := []string{"PUT  401", "PUT SharedAccessSignature 202", "GET SharedAccessSignature 200"}
	if len(flow) != len(want) {
		t.Fatalf("requests %q, want %q", flow, want)
	}
	for i := range want {
		if flow[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, flow[i], want[i])
		}
	}
	// The TPM signs with the hub key the service sent at assignment.
	m := hmac.New(sha256.New, f.HubKey(regID))
	m.Write([]byte(probe))
	if got.Signature != base64.StdEncoding.EncodeToString(m.Sum(nil)) {
		t.Errorf("the Node client's TPM signature %q is not the HMAC with the hub key", got.Signature)
	}
}
