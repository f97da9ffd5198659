package e2e_test

// Azure's walkthrough "How to use X.509 certificates over HTTPS without an
// SDK" replayed against the real dpsd binary: the certificates made with the
// walkthrough's (and Azure's tutorial's) openssl commands, the server
// configured with the dpsd commands that replace the walkthrough's
// `az iot dps` steps, and the walkthrough's curl commands run through bash
// exactly as written, but for the host (global.azure-devices-
// provisioning.net → localhost:PORT), the ID scope and an added --cacert.
// Each flow runs against the fast path and against --azure-strict.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/textproto"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/test/e2e"
)

// The walkthrough's curl commands, with its [placeholders].
const (
	// walkthroughRegister is the walkthrough's "Register your device" command.
	walkthroughRegister = `curl -L -i -X PUT --cert [path_to_your_device_cert] --key [path_to_your_device_private_key] -H 'Content-Type: application/json' -H 'Content-Encoding:  utf-8' -d '{"registrationId": "[registration_id]"}' https://global.azure-devices-provisioning.net/[dps_id_scope]/registrations/[registration_id]/register?api-version=2019-03-31`
	// walkthroughRegisterExample is the walkthrough's example of it (api-version
	// 2021-06-01, a key without pass phrase), with the line breaks of the
	// page's rendering removed.
	walkthroughRegisterExample = `curl -L -i -X PUT --cert device-cert.pem --key unencrypted-device-key.pem -H 'Content-Type: application/json' -H 'Content-Encoding:  utf-8' -d '{"registrationId": "my-x509-device"}' https://global.azure-devices-provisioning.net/0ne003D3F98/registrations/my-x509-device/register?api-version=2021-06-01`
	// walkthroughPoll is the walkthrough's operation status command.
	walkthroughPoll = `curl -L -i -X GET --cert [path_to_your_device_cert] --key [path_to_your_device_private_key] -H 'Content-Type: application/json' -H 'Content-Encoding:  utf-8' https://global.azure-devices-provisioning.net/[dps_id_scope]/registrations/[registration_id]/operations/[operation_id]?api-version=2019-03-31`
)

// walkthroughDevice is one device of the walkthrough and the server it registers with.
type walkthroughDevice struct {
	s        *e2e.Server
	mode     devMode
	dir      string // where the walkthrough's relative paths resolve
	cert     string // --cert argument, as the walkthrough writes it
	key      string // --key argument
	id       string // registration ID
	requests map[string]bool
}

// command fills a walkthrough command: the placeholders, the ID scope of the
// walkthrough's example, the host, and --cacert for the server's CA.
func (d *walkthroughDevice) command(tmpl, operationID string) string {
	r := strings.NewReplacer(
		"[path_to_your_device_cert]", d.cert,
		"[path_to_your_device_private_key]", d.key,
		"[registration_id]", d.id,
		"[dps_id_scope]", d.s.IDScope,
		"[operation_id]", operationID,
		"0ne003D3F98", d.s.IDScope,
		"https://global.azure-devices-provisioning.net/", fmt.Sprintf("https://localhost:%d/", d.s.Port),
	)
	cmd := r.Replace(tmpl)
	return "curl --cacert '" + d.s.CAFile + "' " + strings.TrimPrefix(cmd, "curl ")
}

// walkthroughResponse is what `curl -i` printed: the status line, the headers and
// the JSON body of the last response.
type walkthroughResponse struct {
	statusLine string
	header     http.Header
	body       map[string]any
	raw        string
}

func walkthroughCurl(t *testing.T, dir, command string) *walkthroughResponse {
	t.Helper()
	out := e2e.Shell(t, dir, command)
	rest := out
	var head string
	for {
		i := strings.Index(rest, "\r\n\r\n")
		if i < 0 {
			t.Fatalf("%s\nprinted no complete response:\n%s", command, out)
		}
		head, rest = rest[:i], rest[i+4:]
		if !strings.HasPrefix(rest, "HTTP/") { // -L: the last response counts
			break
		}
	}
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(head + "\r\n\r\n")))
	statusLine, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("%s\nstatus line: %v\n%s", command, err, out)
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("%s\nheaders: %v\n%s", command, err, out)
	}
	r := &walkthroughResponse{statusLine: statusLine, header: http.Header(mh), raw: out}
	if err := json.Unmarshal([]byte(rest), &r.body); err != nil {
		t.Fatalf("%s\nthe body is not a JSON object: %v\n%s", command, err, out)
	}
	return r
}

// checkCommon checks the status line and the headers every answer carries.
func (d *walkthroughDevice) checkCommon(t *testing.T, what string, r *walkthroughResponse, statusLine string) {
	t.Helper()
	if r.statusLine != statusLine {
		t.Fatalf("%s: status line %q, want %q\n%s", what, r.statusLine, statusLine, r.raw)
	}
	if ct := r.header.Values("Content-Type"); len(ct) != 1 || ct[0] != "application/json; charset=utf-8" {
		t.Errorf("%s: Content-Type %q, want exactly application/json; charset=utf-8", what, ct)
	}
	id := r.header.Get("X-Ms-Request-Id")
	if !devUUIDRE.MatchString(id) {
		t.Errorf("%s: x-ms-request-id %q is not a UUID", what, id)
	}
	if d.requests[id] {
		t.Errorf("%s: x-ms-request-id %s was already used by an earlier answer", what, id)
	}
	d.requests[id] = true
}

// register runs a walkthrough register command and checks the answer: 202, the
// headers, an operation ID, and "assigning" (strict) or the terminal state
// (fast path).
func (d *walkthroughDevice) register(t *testing.T, tmpl string) (operationID string, r *walkthroughResponse) {
	t.Helper()
	r = walkthroughCurl(t, d.dir, d.command(tmpl, ""))
	d.checkCommon(t, "register", r, "HTTP/1.1 202 Accepted")
	wantLoc := fmt.Sprintf("https://localhost:%d/%s/registrations/%s/register", d.s.Port, d.s.IDScope, d.id)
	if loc := r.header.Get("Location"); loc != wantLoc {
		t.Errorf("register: Location %q, want %q", loc, wantLoc)
	}
	// The answer's request ID is the tracking ID of the server's log line.
	if id := r.header.Get("X-Ms-Request-Id"); !devLogLine(d.s, "msg=registration trackingId="+id+" ", "registrationId="+d.id) {
		t.Errorf("register: the server log has no registration line with trackingId %s (the answer's x-ms-request-id)", id)
	}
	operationID = str(r.body, "operationId")
	if !devOperationIDRE.MatchString(operationID) {
		t.Fatalf("register: operationId %q is empty or not URL-safe\n%s", operationID, r.raw)
	}
	if d.mode.strict {
		if ra := r.header.Values("Retry-After"); len(ra) != 1 || ra[0] != "3" {
			t.Errorf("register (strict): Retry-After %q, want 3", ra)
		}
		if got := devKeys(r.body); !reflect.DeepEqual(got, []string{"operationId", "status"}) || r.body["status"] != "assigning" {
			t.Errorf(`register (strict): body %v, want {"operationId":…,"status":"assigning"} as Azure answers`, r.body)
		}
	} else if r.body["status"] != "assigned" || r.body["registrationState"] == nil {
		t.Errorf("register (fast path): body %v, want status assigned with the registrationState", r.body)
	}
	return operationID, r
}

// poll runs the walkthrough's operation status command and checks the answer: 200
// and the terminal status of this operation.
func (d *walkthroughDevice) poll(t *testing.T, operationID string) *walkthroughResponse {
	t.Helper()
	r := walkthroughCurl(t, d.dir, d.command(walkthroughPoll, operationID))
	d.checkCommon(t, "poll", r, "HTTP/1.1 200 OK")
	if got := str(r.body, "operationId"); got != operationID {
		t.Errorf("poll: operationId %q, want %q", got, operationID)
	}
	if r.body["status"] != "assigned" {
		t.Errorf("poll: status %v, want assigned\n%s", r.body["status"], r.raw)
	}
	return r
}

// registerAndPoll registers with tmpl, polls the operation it returned, and
// returns the registrationState of the poll, checked against the walkthrough's
// sample answer and want.
func (d *walkthroughDevice) registerAndPoll(t *testing.T, tmpl, substatus string, want map[string]string) map[string]any {
	t.Helper()
	op, reg := d.register(t, tmpl)
	poll := d.poll(t, op)
	st, _ := poll.body["registrationState"].(map[string]any)
	if st == nil {
		t.Fatalf("poll: no registrationState\n%s", poll.raw)
	}
	all := map[string]string{
		"registrationId": d.id,
		"deviceId":       d.id,
		"assignedHub":    devHub,
		"status":         "assigned",
		"substatus":      substatus,
	}
	for k, v := range want {
		all[k] = v
	}
	devWant(t, "poll registrationState", st, all)
	for _, f := range []string{"createdDateTimeUtc", "lastUpdatedDateTimeUtc"} {
		if !devTimeRE.MatchString(str(st, f)) {
			t.Errorf("poll registrationState: %s %q is not like 2022-08-27T17:53:19.5143497Z", f, str(st, f))
		}
	}
	if str(st, "etag") == "" {
		t.Errorf("poll registrationState: no etag")
	}
	if _, ok := st["x509"].(map[string]any); !ok {
		t.Errorf(`poll registrationState: no "x509" object (the walkthrough's answer has one)`)
	}
	if !d.mode.strict && !reflect.DeepEqual(reg.body["registrationState"], st) {
		t.Errorf("fast path: the poll's registrationState differs from the register answer's\nregister: %v\npoll:     %v", reg.body["registrationState"], st)
	}
	return st
}

// checkReRegistration: a second registration keeps the record's creation
// time and changes its etag and last update time.
func checkReRegistration(t *testing.T, first, second map[string]any) {
	t.Helper()
	if str(second, "createdDateTimeUtc") != str(first, "createdDateTimeUtc") {
		t.Errorf("re-registration changed createdDateTimeUtc from %s to %s", str(first, "createdDateTimeUtc"), str(second, "createdDateTimeUtc"))
	}
	if str(second, "etag") == str(first, "etag") {
		t.Errorf("re-registration kept the etag %s", str(first, "etag"))
	}
	if str(second, "lastUpdatedDateTimeUtc") <= str(first, "lastUpdatedDateTimeUtc") {
		t.Errorf("re-registration: lastUpdatedDateTimeUtc %s is not after %s", str(second, "lastUpdatedDateTimeUtc"), str(first, "lastUpdatedDateTimeUtc"))
	}
}

// TestWalkthroughCurlSelfSigned is the walkthrough with "Use a self-signed certificate"
// and "Use an individual enrollment": the device certificate made by the
// walkthrough's openssl command (RSA 4096, key protected by the pass phrase 1234),
// `curl --cert device-cert.pem:1234 --key device-key.pem` to register and
// poll, then the walkthrough's example command (api-version 2021-06-01, the key
// without pass phrase) to register again.
func TestWalkthroughCurlSelfSigned(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e2e.WalkthroughSelfSigned(t, dir)
	e2e.Shell(t, dir, "openssl pkey -in device-key.pem -passin pass:1234 -out unencrypted-device-key.pem")
	thumb := devThumbprint(t, filepath.Join(dir, e2e.WalkthroughDeviceCert))

	for _, mode := range devModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := e2e.StartServer(t, mode.args...)
			login := []string{"--login", s.ConnString, "--ca-file", s.CAFile}
			devCLI(t, dir, append([]string{"enrollment", "create", "--enrollment-id", "my-x509-device", "--attestation-type", "x509", "--certificate-path", "device-cert.pem"}, login...)...)
			devCLI(t, dir, append([]string{"linked-hub", "create", "--connection-string", "HostName=" + devHub + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32)}, login...)...)

			d := &walkthroughDevice{s: s, mode: mode, dir: dir, cert: "device-cert.pem:1234", key: "device-key.pem", id: e2e.WalkthroughDeviceID, requests: map[string]bool{}}
			cert := map[string]string{
				"x509.certificateInfo.subjectName":      "CN=my-x509-device",
				"x509.certificateInfo.issuerName":       "CN=my-x509-device",
				"x509.certificateInfo.sha256Thumbprint": thumb,
			}
			first := d.registerAndPoll(t, walkthroughRegister, "initialAssignment", cert)
			if g := get(first, "x509.enrollmentGroupId"); g != nil {
				t.Errorf("individual enrollment: x509.enrollmentGroupId %v, want none", g)
			}
			second := d.registerAndPoll(t, walkthroughRegisterExample, "reprovisionedToInitialAssignment", cert)
			checkReRegistration(t, first, second)
		})
	}
}

// TestWalkthroughCurlChain is the walkthrough with "Use a certificate chain": the chain
// root → intermediate → device-01 made with the openssl commands of Azure's
// enrollment-group tutorial, the root uploaded and verified, and `curl
// --cert certs/device-01-full-chain.cert.pem --key private/device-01.key.pem`
// to register (api-versions 2019-03-31 and 2021-06-01) and poll; with "Use
// an enrollment group" (a group on the intermediate) and with "Use an
// individual enrollment" (certs/device-01.cert.pem enrolled).
func TestWalkthroughCurlChain(t *testing.T) {
	t.Parallel()
	chain := e2e.OpenSSLChain(t, t.TempDir(), "device-01")
	deviceThumb := devThumbprint(t, chain.Path(chain.Device))
	interThumb := devThumbprint(t, chain.Path(chain.Intermediate))
	if got := devThumbprint(t, chain.Path(chain.FullChain)); got != deviceThumb {
		t.Fatalf("the full chain file does not start with the device certificate")
	}
	leaf := map[string]string{
		"x509.certificateInfo.subjectName":      "CN=device-01",
		"x509.certificateInfo.issuerName":       "CN=Azure IoT Hub Intermediate Cert Test Only",
		"x509.certificateInfo.sha256Thumbprint": deviceThumb,
	}

	for _, enrollment := range []struct {
		name   string
		create []string // the dpsd command replacing az iot dps enrollment[-group] create
		want   map[string]string
	}{
		{name: "group", create: []string{"enrollment-group", "create", "--enrollment-id", "my-x509-group", "--attestation-type", "x509", "--certificate-path", chain.Intermediate},
			want: map[string]string{
				"x509.enrollmentGroupId":                       "my-x509-group",
				"x509.signingCertificateInfo.subjectName":      "CN=Azure IoT Hub Intermediate Cert Test Only",
				"x509.signingCertificateInfo.sha256Thumbprint": interThumb,
			}},
		{name: "individual", create: []string{"enrollment", "create", "--enrollment-id", "device-01", "--attestation-type", "x509", "--certificate-path", chain.Device}},
	} {
		for _, mode := range devModes {
			t.Run(enrollment.name+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				s := e2e.StartServer(t, mode.args...)
				login := []string{"--login", s.ConnString, "--ca-file", s.CAFile}
				devCLI(t, chain.Dir, append(append([]string{}, enrollment.create...), login...)...)
				devCLI(t, chain.Dir, append([]string{"certificate", "create", "--certificate-name", "azure-iot-test-only-root", "--path", chain.Root, "--verified", "true"}, login...)...)
				devCLI(t, chain.Dir, append([]string{"linked-hub", "create", "--connection-string", "HostName=" + devHub + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + sas.NewKey(32)}, login...)...)

				d := &walkthroughDevice{s: s, mode: mode, dir: chain.Dir, cert: chain.FullChain, key: chain.DeviceKey, id: "device-01", requests: map[string]bool{}}
				want := map[string]string{}
				for k, v := range leaf {
					want[k] = v
				}
				for k, v := range enrollment.want {
					want[k] = v
				}
				first := d.registerAndPoll(t, walkthroughRegister, "initialAssignment", want)
				if enrollment.want == nil && (get(first, "x509.enrollmentGroupId") != nil || get(first, "x509.signingCertificateInfo") != nil) {
					t.Errorf("individual enrollment, but the state names a group or signing certificate: %v", first["x509"])
				}
				second := d.registerAndPoll(t, strings.Replace(walkthroughRegister, "api-version=2019-03-31", "api-version=2021-06-01", 1), "reprovisionedToInitialAssignment", want)
				checkReRegistration(t, first, second)
			})
		}
	}
}
