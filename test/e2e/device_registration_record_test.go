package e2e_test

// A device's registration record across its life, seen from both sides: the
// device registers over HTTPS (the walkthrough's curl commands), the record is read
// back through the service API (`dpsd registration show`) and the device
// API's status lookup, the device registers again, the record is deleted
// (`dpsd registration delete`) and the device registers anew.

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/dpsd/dpsd/test/e2e"
)

// walkthroughStatusLookup is the device API's registration status lookup in the
// walkthrough's curl style: POST /{idScope}/registrations/{registrationId}.
const walkthroughStatusLookup = `curl -L -i -X POST --cert [path_to_your_device_cert] --key [path_to_your_device_private_key] -H 'Content-Type: application/json' -H 'Content-Encoding:  utf-8' -d '{"registrationId": "[registration_id]"}' https://global.azure-devices-provisioning.net/[dps_id_scope]/registrations/[registration_id]?api-version=2021-06-01`

// devRecordFields are the fields of a registration record the service API
// returns (DeviceRegistrationState); the device's view has them too.
var devRecordFields = []string{"registrationId", "createdDateTimeUtc", "assignedHub", "deviceId", "status", "substatus", "lastUpdatedDateTimeUtc", "etag"}

// devSameRecord checks that the service's record is the device's state.
func devSameRecord(t *testing.T, what string, rec, state map[string]any) {
	t.Helper()
	for _, f := range devRecordFields {
		if rec[f] != state[f] {
			t.Errorf("%s: %s is %#v in the service's record, %#v in the device's answer", what, f, rec[f], state[f])
		}
	}
}

// TestDeviceRegistrationRecordLifecycle: the record the device's first
// registration creates (initialAssignment, the enrollment's device ID) is
// the one `dpsd registration show` and the device's status lookup return;
// a re-registration keeps createdDateTimeUtc and changes the etag
// (reprovisionedToInitialAssignment); a delete with a stale etag is refused
// and keeps the record; `dpsd registration delete` removes it, after which
// neither side finds it and the next registration is initial again.
func TestDeviceRegistrationRecordLifecycle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	devCLI(t, dir, "cert", "create-self-signed", "--common-name", "rec-x509-device", "--passphrase", "1234")

	for _, mode := range devModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := e2e.StartServer(t, mode.args...)
			devLinkHub(t, s)
			devCLI(t, dir, "enrollment", "create", "--data", s.Dir, "--enrollment-id", "rec-x509-device", "--attestation-type", "x509",
				"--certificate-path", "device-cert.pem", "--device-id", "rec-device-in-hub")
			d := &walkthroughDevice{s: s, mode: mode, dir: dir, cert: "device-cert.pem:1234", key: "device-key.pem", id: "rec-x509-device", requests: map[string]bool{}}
			want := map[string]string{"deviceId": "rec-device-in-hub", "x509.certificateInfo.subjectName": "CN=rec-x509-device"}

			if _, found := devRecord(t, s, d.id); found {
				t.Fatalf("a registration record exists before the device registered")
			}
			first := d.registerAndPoll(t, walkthroughRegister, "initialAssignment", want)
			rec, found := devRecord(t, s, d.id)
			if !found {
				t.Fatalf("dpsd registration show found no record after the registration")
			}
			devSameRecord(t, "after the first registration", rec, first)
			lookup := d.statusLookup(t, "HTTP/1.1 200 OK")
			if !reflect.DeepEqual(lookup.body, first) {
				t.Errorf("the device's status lookup returned\n%v\nthe operation's registrationState was\n%v", lookup.body, first)
			}

			second := d.registerAndPoll(t, walkthroughRegister, "reprovisionedToInitialAssignment", want)
			checkReRegistration(t, first, second)
			rec, _ = devRecord(t, s, d.id)
			devSameRecord(t, "after the re-registration", rec, second)

			_, errOut, err := devRun(t, "", "registration", "delete", "--data", s.Dir, "--registration-id", d.id, "--etag", str(first, "etag"))
			if err == nil || !strings.Contains(errOut, "HTTP 412") {
				t.Errorf("delete with the stale etag of the first registration: err %v, stderr %q; want HTTP 412", err, errOut)
			}
			if rec, found := devRecord(t, s, d.id); !found || rec["etag"] != second["etag"] {
				t.Fatalf("a refused delete changed the record: %v (found %v)", rec, found)
			}

			devCLI(t, "", "registration", "delete", "--data", s.Dir, "--registration-id", d.id)
			if rec, found := devRecord(t, s, d.id); found {
				t.Fatalf("dpsd registration show still finds the deleted record: %v", rec)
			}
			gone := d.statusLookup(t, "HTTP/1.1 404 Not Found")
			if code, _ := gone.body["errorCode"].(float64); code != 404202 {
				t.Errorf("status lookup of a deleted record: errorCode %v, want 404202\n%s", gone.body["errorCode"], gone.raw)
			}

			third := d.registerAndPoll(t, walkthroughRegister, "initialAssignment", want)
			if str(third, "createdDateTimeUtc") <= str(second, "createdDateTimeUtc") {
				t.Errorf("after the delete, createdDateTimeUtc %s is not newer than the deleted record's %s: the record was not created anew", str(third, "createdDateTimeUtc"), str(second, "createdDateTimeUtc"))
			}
			if str(third, "etag") == str(second, "etag") {
				t.Errorf("the new record has the deleted record's etag")
			}
			rec, found = devRecord(t, s, d.id)
			if !found {
				t.Fatalf("no record after registering again")
			}
			devSameRecord(t, "after the delete and a new registration", rec, third)
		})
	}
}

// statusLookup runs the device API's registration status lookup and checks
// its status line and headers.
func (d *walkthroughDevice) statusLookup(t *testing.T, statusLine string) *walkthroughResponse {
	t.Helper()
	r := walkthroughCurl(t, d.dir, d.command(walkthroughStatusLookup, ""))
	d.checkCommon(t, fmt.Sprintf("status lookup (%s)", statusLine), r, statusLine)
	return r
}

// TestDeviceReRegistrationOtherCase: registration IDs are case-insensitive
// (the walkthrough: "The registration ID is a case-insensitive string"), and dpsd
// matches the certificate CN, the enrollment and the record without regard
// to case. A device that registers again with its ID in another case is the
// same device on the same hub (reprovisionedToInitialAssignment), so its
// record must keep its registration ID and its device ID: the IoT Hub
// device ID is case-sensitive, and a device ID that follows the case of the
// latest request names another device in the hub.
func TestDeviceReRegistrationOtherCase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	devCLI(t, dir, "cert", "create-self-signed", "--common-name", "case-x509-device")
	s := e2e.StartServer(t)
	devLinkHub(t, s)
	devCLI(t, dir, "enrollment", "create", "--data", s.Dir, "--enrollment-id", "case-x509-device", "--attestation-type", "x509", "--certificate-path", "device-cert.pem")

	d := &walkthroughDevice{s: s, mode: devModes[0], dir: dir, cert: "device-cert.pem", key: "device-key.pem", id: "case-x509-device", requests: map[string]bool{}}
	first := d.registerAndPoll(t, walkthroughRegister, "initialAssignment", nil)

	upper := *d
	upper.id = "CASE-X509-DEVICE"
	second := upper.registerAndPoll(t, walkthroughRegister, "reprovisionedToInitialAssignment", map[string]string{
		"registrationId": "case-x509-device",
		"deviceId":       "case-x509-device",
	})
	checkReRegistration(t, first, second)
	rec, found := devRecord(t, s, "case-x509-device")
	if !found {
		t.Fatalf("no registration record")
	}
	devWant(t, "registration record", rec, map[string]string{"registrationId": "case-x509-device", "deviceId": "case-x509-device"})
}
