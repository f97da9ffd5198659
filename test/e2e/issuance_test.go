package e2e_test

// Certificate issuance against the real dpsd binary, with the tools an
// operator would use: an issuing CA made with `dpsd issuing-ca create`, a
// CSR made by openssl and sent with curl (the 2025-07-01-preview contract),
// the chain checked with `openssl verify`, the device registering again
// with its certificate, revocation with `dpsd issued-certificate revoke`,
// and the CRL read and checked with `openssl crl` and `openssl verify
// -crl_check`. `dpsd device register --csr` gets a certificate too. Each
// flow runs against the fast path and against --azure-strict.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/test/e2e"
)

// issuanceCurl runs a curl command of the flow in dir and returns the HTTP
// status and the JSON body.
func issuanceCurl(t *testing.T, s *e2e.Server, dir, args string) (int, map[string]any) {
	t.Helper()
	out := e2e.Shell(t, dir, "curl -sS --cacert '"+s.CAFile+"' -w '\\n%{http_code}' "+args)
	i := strings.LastIndexByte(out, '\n')
	var status int
	fmt.Sscan(out[i+1:], &status)
	var body map[string]any
	if err := json.Unmarshal([]byte(out[:i]), &body); err != nil {
		t.Fatalf("curl %s: the body is not a JSON object: %v\n%s", args, err, out)
	}
	return status, body
}

func TestIssuanceCurlOpenSSL(t *testing.T) {
	t.Parallel()
	for _, mode := range devModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := e2e.StartServer(t, append(mode.args, "--crl-base-url", "https://crl.example.com:9443")...)
			dir := t.TempDir()
			data := []string{"--data", s.Dir}
			devLinkHub(t, s)
			devCLI(t, dir, append([]string{"issuing-ca", "create", "--name", "line-ca", "--validity-days", "30"}, data...)...)
			devCLI(t, dir, append([]string{"issuing-ca", "show", "--name", "line-ca", "--cert-out", "ca.pem"}, data...)...)
			enrolled := devCLIJSON(t, dir, append([]string{"enrollment", "create", "--enrollment-id", "csr-device", "--attestation-type", "symmetrickey", "--issuing-ca", "line-ca", "-o", "json"}, data...)...)
			keyB64, _ := get(enrolled, "attestation.symmetricKey.primaryKey").(string)
			key, err := base64.StdEncoding.DecodeString(keyB64)
			if err != nil {
				t.Fatalf("enrollment key %q: %v", keyB64, err)
			}
			token := sas.New(s.IDScope+"/registrations/csr-device", "registration", key, time.Now().Add(time.Hour), true)
			base := fmt.Sprintf("https://localhost:%d/%s/registrations/csr-device", s.Port, s.IDScope)
			hdr := fmt.Sprintf("-H 'Authorization: %s' -H 'Content-Type: application/json' ", token)

			// The device's key and CSR, with openssl: base64 DER on one line.
			e2e.Shell(t, dir, `openssl ecparam -genkey -name prime256v1 -noout -out device.key && `+
				`openssl req -new -key device.key -subj /CN=csr-device -outform DER | base64 -w0 > csr.b64 && `+
				`openssl req -new -key device.key -subj /CN=another-device -outform DER | base64 -w0 > wrong-cn.b64`)
			register := func(csrFile string) (int, map[string]any) {
				return issuanceCurl(t, s, dir, "-X PUT "+hdr+`-d "{\"registrationId\":\"csr-device\",\"csr\":\"$(cat `+csrFile+`)\"}" '`+base+"/register?api-version=2025-07-01-preview'")
			}

			// A bad CSR is refused before anything is stored.
			status, body := register("wrong-cn.b64")
			if status != 400 || !strings.Contains(str(body, "message"), `the subject CN "another-device" of csr does not match registration ID "csr-device"`) {
				t.Fatalf("a CSR for another CN: %d %v", status, body)
			}
			if _, found := devRecord(t, s, "csr-device"); found {
				t.Fatal("the refused register wrote a registration record")
			}

			status, body = register("csr.b64")
			if status != 202 {
				t.Fatalf("register: %d %v", status, body)
			}
			if mode.strict {
				if str(body, "status") != "assigning" || body["registrationState"] != nil {
					t.Fatalf("strict register: %v", body)
				}
				time.Sleep(time.Second)
				status, body = issuanceCurl(t, s, dir, hdr+"'"+base+"/operations/"+str(body, "operationId")+"?api-version=2025-07-01-preview'")
				if status != 200 {
					t.Fatalf("poll: %d %v", status, body)
				}
			}
			devWant(t, "register", body, map[string]string{"status": "assigned", "registrationState.assignedHub": devHub})
			chain, _ := get(body, "registrationState.issuedCertificateChain").([]any)
			if len(chain) != 2 {
				t.Fatalf("issuedCertificateChain: %v", get(body, "registrationState.issuedCertificateChain"))
			}
			for i, c := range chain {
				b, _ := c.(string)
				e2e.Shell(t, dir, fmt.Sprintf("echo %s | base64 -d | openssl x509 -inform DER -out chain-%d.pem", b, i))
			}
			// The chain verifies with openssl, up to the CA operators download.
			if out := e2e.Shell(t, dir, "cmp <(openssl x509 -in chain-1.pem -outform DER) <(openssl x509 -in ca.pem -outform DER) && openssl verify -CAfile ca.pem chain-0.pem"); !strings.Contains(out, "chain-0.pem: OK") {
				t.Fatalf("openssl verify: %s", out)
			}
			text := e2e.Shell(t, dir, "openssl x509 -in chain-0.pem -noout -subject -ext extendedKeyUsage,crlDistributionPoints")
			for _, want := range []string{"CN = csr-device", "TLS Web Client Authentication", "URI:https://crl.example.com:9443/crl/line-ca.crl"} {
				if !strings.Contains(text, want) {
					t.Errorf("issued certificate: no %q in\n%s", want, text)
				}
			}

			// The status lookup never carries the chain, and refuses a csr.
			status, body = issuanceCurl(t, s, dir, "-X POST "+hdr+`-d '{"registrationId":"csr-device"}' '`+base+"?api-version=2025-07-01-preview'")
			if status != 200 || body["issuedCertificateChain"] != nil {
				t.Errorf("status lookup: %d %v", status, body)
			}
			if status, body = issuanceCurl(t, s, dir, "-X POST "+hdr+`-d "{\"csr\":\"$(cat csr.b64)\"}" '`+base+"?api-version=2025-07-01-preview'"); status != 400 {
				t.Errorf("status lookup with a csr: %d %v", status, body)
			}

			// The device registers again with its certificate (mTLS, no SAS).
			mtls := "-X PUT --cert chain-0.pem --key device.key -H 'Content-Type: application/json' -d '{\"registrationId\":\"csr-device\"}' '" + base + "/register?api-version=2021-06-01'"
			status, body = issuanceCurl(t, s, dir, mtls)
			if status != 202 || body["errorCode"] != nil {
				t.Fatalf("register with the issued certificate: %d %v", status, body)
			}

			// Revoked: refused, and in the CRL, which openssl checks.
			serial := strings.TrimPrefix(strings.TrimSpace(e2e.Shell(t, dir, "openssl x509 -in chain-0.pem -noout -serial")), "serial=")
			devCLI(t, dir, append([]string{"issued-certificate", "revoke", "--registration-id", "csr-device", "--reason", "keyCompromise"}, data...)...)
			status, body = issuanceCurl(t, s, dir, mtls)
			if status != 401 || !strings.Contains(str(body, "message"), "(serial number "+serial+"), issued by issuing CA \"line-ca\", was revoked at") {
				t.Fatalf("register with the revoked certificate: %d %v", status, body)
			}
			e2e.Shell(t, dir, fmt.Sprintf("curl -sS --fail --cacert '%s' -o line-ca.crl https://localhost:%d/crl/line-ca.crl", s.CAFile, s.Port))
			crl := e2e.Shell(t, dir, "openssl crl -inform DER -in line-ca.crl -CAfile ca.pem -noout -text 2>&1")
			for _, want := range []string{"verify OK", "Serial Number: " + serial, "Key Compromise", "Issuer: CN = line-ca"} {
				if !strings.Contains(crl, want) {
					t.Errorf("openssl crl: no %q in\n%s", want, crl)
				}
			}
			check := e2e.Shell(t, dir, "openssl crl -inform DER -in line-ca.crl -out line-ca.crl.pem && cat ca.pem line-ca.crl.pem > ca-and-crl.pem && "+
				"openssl verify -crl_check -CAfile ca-and-crl.pem chain-0.pem 2>&1 || true")
			if !strings.Contains(check, "certificate revoked") {
				t.Errorf("openssl verify -crl_check: %s", check)
			}

			// dpsd device register --csr: a new key and certificate, 0600.
			out := devCLI(t, dir, append([]string{"device", "register", "--registration-id", "csr-device", "--symmetric-key", keyB64, "--csr"}, data...)...)
			if !strings.Contains(out, "certificate:") || !strings.Contains(e2e.Shell(t, dir, "openssl verify -CAfile ca.pem csr-device-cert.pem"), "OK") {
				t.Fatalf("dpsd device register --csr:\n%s", out)
			}
			fi, err := os.Stat(filepath.Join(dir, "csr-device-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("the new key has mode %v, want 0600", fi.Mode().Perm())
			}
		})
	}
}
