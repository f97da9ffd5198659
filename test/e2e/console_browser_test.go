package e2e_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/test/e2e"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the console's screenshots into docs/images")

// chromium is Debian's Chromium, which .ci/run installs.
const chromium = "/usr/bin/chromium"

// TestConsoleInBrowser drives the web console of a real dpsd in headless
// Chromium (test/node/console-browser.js: sign in, create an enrollment,
// register a device with the Go client, its record, a refusal in the
// journal, a CA verified by proof of possession, a read-only policy refused
// every write), then checks on the server that each action took effect and
// that the read-only policy changed nothing. With -update-screenshots the
// screenshots replace those of docs/images.
func TestConsoleInBrowser(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is missing (%v): install Debian's chromium package, as .ci/run does", chromium, err)
	}
	if _, err := os.Stat(filepath.Join(e2e.NodeDir(t), "node_modules", "puppeteer-core", "package.json")); err != nil {
		t.Fatalf("puppeteer-core is not installed: run npm ci --ignore-scripts --prefix test/node")
	}
	s := e2e.StartServer(t)
	cl := s.Client(t)
	ctx := context.Background()
	if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodPut, Path: "/linkedHubs/hub-console.azure-devices.net",
		Body: map[string]any{"connectionString": "HostName=hub-console.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32)}}, nil); err != nil {
		t.Fatal(err)
	}
	var reader dps.AccessPolicy
	if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodPut, Path: "/policies/reader",
		Body: map[string]any{"rights": dps.RightEnrollmentRead + ", " + dps.RightRegistrationStatusRead}}, &reader); err != nil {
		t.Fatal(err)
	}

	shots := t.TempDir()
	if *updateScreenshots {
		root, err := e2e.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		shots = filepath.Join(root, "docs", "images")
	}
	start := time.Now()
	out := e2e.RunNode(t, "console-browser.js", map[string]string{
		"DPSD_CONSOLE_URL":      "https://" + s.ServiceEndpoint + "/console/",
		"DPS_CONNECTION_STRING": s.ConnString,
		"DPSD_READER_POLICY":    "reader",
		"DPSD_READER_KEY":       reader.PrimaryKey,
		"DPSD_BIN":              s.Bin,
		"DPSD_DATA":             s.Dir,
		"DPSD_SPKI":             serverSPKI(t, s),
		"DPSD_SCREENSHOTS":      shots,
		"DPSD_WORK":             t.TempDir(),
	})
	t.Logf("the browser test took %s", time.Since(start).Round(time.Millisecond))
	var res struct {
		Steps []map[string]any `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("console-browser.js printed %q: %v", out, err)
	}
	if len(res.Steps) < 10 {
		t.Fatalf("console-browser.js did %d steps:\n%s", len(res.Steps), out)
	}

	// What the browser did, seen from the service API.
	var rec dps.DeviceRegistrationState
	if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodGet, Path: "/registrations/console-device"}, &rec); err != nil || rec.Status != dps.StatusAssigned {
		t.Errorf("the device's record: %+v, %v; want assigned", rec, err)
	}
	var e dps.IndividualEnrollment
	if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodGet, Path: "/enrollments/console-device"}, &e); err != nil ||
		e.ProvisioningStatus != dps.ProvisioningEnabled || e.InitialTwin == nil || !strings.Contains(string(e.InitialTwin.Tags), "line-3") {
		t.Errorf("the enrollment after the read-only policy tried to change it: %+v, %v", e, err)
	}
	var refusals []dps.Refusal
	if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodGet, Path: "/refusals?" + url.Values{"registrationId": {"console-device"}}.Encode()}, &refusals); err != nil ||
		len(refusals) != 2 || refusals[0].ErrorCode != 401002 || refusals[0].Transport != "mqtt" || refusals[1].Transport != "https" {
		t.Errorf("the journal of console-device: %+v, %v; want its refusals over MQTT and HTTPS", refusals, err)
	}
	var ca dps.CertificateResponse
	if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodGet, Path: "/certificates/console-root"}, &ca); err != nil || !ca.Properties.IsVerified {
		t.Errorf("the CA certificate: %+v, %v; want verified", ca.Properties, err)
	}
	for _, path := range []string{"/enrollments/readonly-device", "/enrollmentGroups/readonly-group", "/certificates/readonly-root"} {
		var se *svcclient.Error
		if _, err := cl.Do(ctx, svcclient.Request{Method: http.MethodGet, Path: path}, nil); !asStatus(err, &se, http.StatusNotFound) {
			t.Errorf("GET %s: %v; the read-only policy must not have created it", path, err)
		}
	}
	if *updateScreenshots {
		compress(t, shots)
	}
	for _, name := range []string{"console-signin.png", "console-overview.png", "console-enrollment.png", "console-registration.png", "console-refusals.png", "console-certificate.png", "console-readonly.png"} {
		if fi, err := os.Stat(filepath.Join(shots, name)); err != nil || fi.Size() < 1000 {
			t.Errorf("screenshot %s: %v", name, err)
		}
	}
}

func asStatus(err error, se **svcclient.Error, status int) bool {
	return errors.As(err, se) && (*se).Status == status
}

// serverSPKI is the base64 SHA-256 of the public keys of the certificates
// the server presents, which Chromium is told to trust
// (--ignore-certificate-errors-spki-list): the test trusts its server's CA
// without touching the system's trust store.
func serverSPKI(t *testing.T, s *e2e.Server) string {
	t.Helper()
	roots := x509.NewCertPool()
	ca, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(ca)
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strings.Split(s.ServiceEndpoint, ":")[1], &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sums []string
	for _, c := range conn.ConnectionState().VerifiedChains[0] {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		sums = append(sums, base64.StdEncoding.EncodeToString(sum[:]))
	}
	return strings.Join(sums, ",")
}

// compress makes the committed screenshots small with pngquant, when it is
// installed (it is not needed to run the test).
func compress(t *testing.T, dir string) {
	t.Helper()
	pq, err := exec.LookPath("pngquant")
	if err != nil {
		t.Logf("pngquant is not installed: the screenshots are left uncompressed")
		return
	}
	files, _ := filepath.Glob(filepath.Join(dir, "console-*.png"))
	args := append([]string{"--force", "--skip-if-larger", "--strip", "--ext", ".png", "--quality", "50-80"}, files...)
	if out, err := exec.Command(pq, args...).CombinedOutput(); err != nil {
		t.Logf("pngquant: %v\n%s", err, out)
	}
}
