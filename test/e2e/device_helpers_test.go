package e2e_test

// Helpers of the device provisioning tests (walkthrough_*_test.go,
// device_*_test.go). Their names start with "dev" so that they stay apart
// from the helpers of the other tests of this package.

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/test/e2e"
)

// devHub is the walkthrough's IoT hub.
const devHub = "MyExampleHub.azure-devices.net"

var (
	// devTimeRE is the DPS date format: 7 fractional digits and Z.
	devTimeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$`)
	devUUIDRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	// devOperationIDRE: opaque, but it goes into URL paths and MQTT topics.
	devOperationIDRE = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)
)

// devRun runs `dpsd args...` in dir ("" for the test's directory) and
// returns its outputs and exit error.
func devRun(t *testing.T, dir string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(e2e.Binary(t), args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// devCLI runs `dpsd args...` in dir and returns its standard output; the
// test fails if it exits non-zero.
func devCLI(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, err := devRun(t, dir, args...)
	if err != nil {
		t.Fatalf("dpsd %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// devCLIJSON runs a dpsd command that prints JSON (-o json) and decodes it.
func devCLIJSON(t *testing.T, dir string, args ...string) map[string]any {
	t.Helper()
	out := devCLI(t, dir, args...)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("dpsd %s printed no JSON object: %v\n%s", strings.Join(args, " "), err, out)
	}
	return m
}

// devLinkHub links the walkthrough's hub, MyExampleHub.azure-devices.net, to the
// server with the command that replaces `az iot dps linked-hub create`.
func devLinkHub(t *testing.T, s *e2e.Server) {
	t.Helper()
	devCLI(t, "", "linked-hub", "create", "--data", s.Dir,
		"--connection-string", "HostName="+devHub+";SharedAccessKeyName=iothubowner;SharedAccessKey="+sas.NewKey(32))
}

// devRecord reads a registration record through the service API with
// `dpsd registration show`; found is false when the server has none (404).
func devRecord(t *testing.T, s *e2e.Server, id string) (rec map[string]any, found bool) {
	t.Helper()
	out, errOut, err := devRun(t, "", "registration", "show", "--data", s.Dir, "--registration-id", id, "-o", "json")
	if err != nil {
		if strings.Contains(errOut, "HTTP 404") {
			return nil, false
		}
		t.Fatalf("dpsd registration show --registration-id %s: %v\n%s%s", id, err, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("dpsd registration show -o json: %v\n%s", err, out)
	}
	return rec, true
}

// devLogLine waits up to 5 s for a line of the server's log that holds
// every part (the log is copied from the process's output asynchronously).
func devLogLine(s *e2e.Server, parts ...string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range strings.Split(s.Logs(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// devThumbprint is the SHA-256 thumbprint (upper-case hex) of the first
// certificate of a PEM file.
func devThumbprint(t *testing.T, file string) string {
	t.Helper()
	certs, err := pki.ReadCertificatesFile(file)
	if err != nil || len(certs) == 0 {
		t.Fatalf("reading %s: %v", file, err)
	}
	return pki.SHA256Thumbprint(certs[0])
}

// devWant checks string fields of a JSON object: path → wanted value.
func devWant(t *testing.T, what string, m map[string]any, want map[string]string) {
	t.Helper()
	for path, v := range want {
		if got := get(m, path); got != v {
			t.Errorf("%s: %s = %#v, want %q", what, path, got, v)
		}
	}
}

// devKeys returns the keys of a JSON object, sorted.
func devKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// devCredentials makes the device credentials both device suites use, in a
// new directory: the self-signed certificate of Azure's X.509 walkthrough
// (e2e.WalkthroughDeviceCert and e2e.WalkthroughDeviceKey, in dir) and a
// chain made by `dpsd cert` for device chainID (in chain.Dir).
func devCredentials(t *testing.T, chainID string) (dir string, chain *e2e.CertChain) {
	t.Helper()
	dir = t.TempDir()
	e2e.WalkthroughSelfSigned(t, dir)
	return dir, e2e.DpsdChain(t, filepath.Join(dir, "chain"), chainID)
}

// devEnroll links the hub and enrolls, with the dpsd CLI, what both device
// suites register: the self-signed certificate in dir as an individual
// enrollment, a group PREFIX-x509-group on the chain's intermediate with
// its root uploaded verified (PREFIX-root), an individual symmetric key
// PREFIX-sym-device and a symmetric-key group PREFIX-sym-group. It returns
// the keys the server generated.
func devEnroll(t *testing.T, s *e2e.Server, dir string, chain *e2e.CertChain, prefix string) (indKey, groupKey string) {
	t.Helper()
	devLinkHub(t, s)
	data := []string{"--data", s.Dir}
	devCLI(t, dir, append([]string{"enrollment", "create", "--enrollment-id", e2e.WalkthroughDeviceID, "--attestation-type", "x509", "--certificate-path", e2e.WalkthroughDeviceCert}, data...)...)
	devCLI(t, chain.Dir, append([]string{"enrollment-group", "create", "--enrollment-id", prefix + "-x509-group", "--attestation-type", "x509", "--certificate-path", chain.Intermediate}, data...)...)
	devCLI(t, chain.Dir, append([]string{"certificate", "create", "--certificate-name", prefix + "-root", "--path", chain.Root, "--verified", "true"}, data...)...)
	ind := devCLIJSON(t, "", append([]string{"enrollment", "create", "--enrollment-id", prefix + "-sym-device", "--attestation-type", "symmetrickey", "-o", "json"}, data...)...)
	grp := devCLIJSON(t, "", append([]string{"enrollment-group", "create", "--enrollment-id", prefix + "-sym-group", "--attestation-type", "symmetrickey", "-o", "json"}, data...)...)
	indKey, groupKey = str(ind, "attestation.symmetricKey.primaryKey"), str(grp, "attestation.symmetricKey.primaryKey")
	if indKey == "" || groupKey == "" {
		t.Fatalf("enrollment create -o json printed no keys: %v %v", ind, grp)
	}
	return indKey, groupKey
}

// devMode is how the server answers a register request.
type devMode struct {
	name   string
	args   []string // dpsd serve flags
	strict bool
}

// devModes: the fast path (the register answer carries the terminal status)
// and Azure's strict behaviour (assigning, Retry-After: 3, then poll).
var devModes = []devMode{
	{name: "fast"},
	{name: "strict", args: []string{"--azure-strict"}, strict: true},
}
