package e2e

// Device certificates made the way Azure's X.509-over-HTTPS walkthrough and
// its enrollment-group tutorial make them (the openssl command line), or with
// `dpsd cert`. The files land where the walkthrough expects them, relative to
// one directory, so that the walkthrough's curl commands run unchanged in it.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// WalkthroughSelfSignedCommand is the walkthrough's Linux command for the self-signed
// device certificate, verbatim, plus -passout: the walkthrough types the pass phrase
// 1234 at openssl's two prompts, a test gives it on the command line.
const WalkthroughSelfSignedCommand = `openssl req -outform PEM -x509 -sha256 -newkey rsa:4096 -keyout device-key.pem -out device-cert.pem -days 30 -extensions usr_cert -addext extendedKeyUsage=clientAuth -subj "/CN=my-x509-device" -passout pass:1234`

// Files of the walkthrough's self-signed device (relative to its directory).
const (
	WalkthroughDeviceCert = "device-cert.pem"
	WalkthroughDeviceKey  = "device-key.pem" // encrypted, pass phrase WalkthroughPassphrase
	WalkthroughPassphrase = "1234"
	WalkthroughDeviceID   = "my-x509-device"
)

// Shell runs command with bash in dir and returns its standard output; the
// test fails if it exits non-zero. Commands run through a shell so that the
// test source shows them exactly as a user types them.
func Shell(t testing.TB, dir, command string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", command)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("in %s: %s: %v\nstdout:\n%s\nstderr:\n%s", dir, command, err, out.String(), errOut.String())
	}
	return out.String()
}

// WalkthroughSelfSigned runs WalkthroughSelfSignedCommand in dir: device-cert.pem
// (CN=my-x509-device, RSA 4096, clientAuth) and device-key.pem (encrypted
// with the pass phrase 1234).
func WalkthroughSelfSigned(t testing.TB, dir string) {
	t.Helper()
	Shell(t, dir, WalkthroughSelfSignedCommand)
}

// CertChain is a root → intermediate → device chain in Dir, with the file
// names of Azure's enrollment-group tutorial (paths relative to Dir).
type CertChain struct {
	Dir          string
	DeviceID     string
	Root         string // certs/azure-iot-test-only.root.ca.cert.pem
	Intermediate string // certs/azure-iot-test-only.intermediate.cert.pem
	Device       string // certs/<id>.cert.pem
	FullChain    string // certs/<id>-full-chain.cert.pem: device, intermediate, root
	DeviceKey    string // private/<id>.key.pem, not encrypted
}

// Path returns the absolute path of a file of the chain.
func (c *CertChain) Path(rel string) string { return filepath.Join(c.Dir, rel) }

func newCertChain(t testing.TB, dir, deviceID string) *CertChain {
	t.Helper()
	for _, d := range []string{"certs", "csr", "newcerts", "private"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &CertChain{
		Dir:          dir,
		DeviceID:     deviceID,
		Root:         "certs/azure-iot-test-only.root.ca.cert.pem",
		Intermediate: "certs/azure-iot-test-only.intermediate.cert.pem",
		Device:       "certs/" + deviceID + ".cert.pem",
		FullChain:    "certs/" + deviceID + "-full-chain.cert.pem",
		DeviceKey:    "private/" + deviceID + ".key.pem",
	}
}

// The openssl configuration files of Azure's tutorial "Provision multiple
// X.509 devices using enrollment groups" (trimmed to what the commands use).
const opensslRootCAConfig = `# OpenSSL root CA configuration file.

[ ca ]
default_ca = CA_default

[ CA_default ]
dir               = .
certs             = $dir/certs
crl_dir           = $dir/crl
new_certs_dir     = $dir/newcerts
database          = $dir/index.txt
serial            = $dir/serial
RANDFILE          = $dir/private/.rand
private_key       = $dir/private/azure-iot-test-only.root.ca.key.pem
certificate       = $dir/certs/azure-iot-test-only.root.ca.cert.pem
crlnumber         = $dir/crlnumber
crl               = $dir/crl/azure-iot-test-only.intermediate.crl.pem
crl_extensions    = crl_ext
default_crl_days  = 30
default_md        = sha256
name_opt          = ca_default
cert_opt          = ca_default
default_days      = 375
preserve          = no
policy            = policy_loose

[ policy_loose ]
countryName             = optional
stateOrProvinceName     = optional
localityName            = optional
organizationName        = optional
organizationalUnitName  = optional
commonName              = supplied
emailAddress            = optional

[ req ]
default_bits        = 4096
distinguished_name  = req_distinguished_name
string_mask         = utf8only
default_md          = sha256
x509_extensions     = v3_ca

[ req_distinguished_name ]
countryName                     = Country Name (2 letter code)
stateOrProvinceName             = State or Province Name
localityName                    = Locality Name
0.organizationName              = Organization Name
organizationalUnitName          = Organizational Unit Name
commonName                      = Common Name
emailAddress                    = Email Address

[ v3_ca ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, cRLSign, keyCertSign

[ v3_intermediate_ca ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
basicConstraints = critical, CA:true
keyUsage = critical, digitalSignature, cRLSign, keyCertSign

[ usr_cert ]
basicConstraints = CA:FALSE
nsComment = "OpenSSL Generated Client Certificate"
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
keyUsage = critical, nonRepudiation, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
`

// OpenSSLChain creates, in dir, the chain of Azure's enrollment-group
// tutorial with its openssl commands: a root CA and an intermediate CA (RSA
// 4096, keys encrypted with 1234), and the device certificate of deviceID
// signed by the intermediate (key not encrypted), with the full chain file
// device + intermediate + root.
func OpenSSLChain(t testing.TB, dir, deviceID string) *CertChain {
	t.Helper()
	c := newCertChain(t, dir, deviceID)
	interCfg := bytes.ReplaceAll([]byte(opensslRootCAConfig), []byte("azure-iot-test-only.root.ca.key.pem"), []byte("azure-iot-test-only.intermediate.key.pem"))
	interCfg = bytes.ReplaceAll(interCfg, []byte("certs/azure-iot-test-only.root.ca.cert.pem"), []byte("certs/azure-iot-test-only.intermediate.cert.pem"))
	for name, data := range map[string][]byte{
		"openssl_root_ca.cnf":                []byte(opensslRootCAConfig),
		"openssl_device_intermediate_ca.cnf": interCfg,
		"index.txt":                          nil,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	Shell(t, dir, `set -e
openssl rand -hex 16 > serial
openssl req -new -x509 -config ./openssl_root_ca.cnf -passout pass:1234 -keyout ./private/azure-iot-test-only.root.ca.key.pem -subj '/CN=Azure IoT Hub CA Cert Test Only' -days 30 -sha256 -extensions v3_ca -out ./certs/azure-iot-test-only.root.ca.cert.pem
openssl req -new -config ./openssl_device_intermediate_ca.cnf -passout pass:1234 -keyout ./private/azure-iot-test-only.intermediate.key.pem -subj '/CN=Azure IoT Hub Intermediate Cert Test Only' -out ./csr/azure-iot-test-only.intermediate.csr.pem
openssl ca -batch -config ./openssl_root_ca.cnf -passin pass:1234 -extensions v3_intermediate_ca -days 30 -notext -md sha256 -in ./csr/azure-iot-test-only.intermediate.csr.pem -out ./certs/azure-iot-test-only.intermediate.cert.pem
openssl genpkey -out ./private/`+deviceID+`.key.pem -algorithm RSA -pkeyopt rsa_keygen_bits:4096
openssl req -config ./openssl_device_intermediate_ca.cnf -key ./private/`+deviceID+`.key.pem -subj '/CN=`+deviceID+`' -new -sha256 -out ./csr/`+deviceID+`.csr.pem
openssl ca -batch -config ./openssl_device_intermediate_ca.cnf -passin pass:1234 -extensions usr_cert -days 30 -notext -md sha256 -in ./csr/`+deviceID+`.csr.pem -out ./certs/`+deviceID+`.cert.pem
cat ./certs/`+deviceID+`.cert.pem ./certs/azure-iot-test-only.intermediate.cert.pem ./certs/azure-iot-test-only.root.ca.cert.pem > ./certs/`+deviceID+`-full-chain.cert.pem
`)
	return c
}

// DpsdChain creates the same chain as OpenSSLChain with `dpsd cert
// create-root-ca / create-intermediate-ca / create-device` (ECDSA P-256
// keys, none encrypted).
func DpsdChain(t testing.TB, dir, deviceID string) *CertChain {
	t.Helper()
	c := newCertChain(t, dir, deviceID)
	bin := Binary(t)
	for _, args := range [][]string{
		{"cert", "create-root-ca", "--common-name", "Azure IoT Hub CA Cert Test Only",
			"--cert-file", c.Root, "--key-file", "private/azure-iot-test-only.root.ca.key.pem"},
		{"cert", "create-intermediate-ca", "--common-name", "Azure IoT Hub Intermediate Cert Test Only",
			"--ca-cert", c.Root, "--ca-key", "private/azure-iot-test-only.root.ca.key.pem",
			"--cert-file", c.Intermediate, "--key-file", "private/azure-iot-test-only.intermediate.key.pem",
			"--chain-file", "certs/azure-iot-test-only.intermediate-full-chain.cert.pem"},
		{"cert", "create-device", "--common-name", deviceID,
			"--ca-cert", "certs/azure-iot-test-only.intermediate-full-chain.cert.pem", "--ca-key", "private/azure-iot-test-only.intermediate.key.pem",
			"--cert-file", c.Device, "--key-file", c.DeviceKey, "--chain-file", c.FullChain},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dpsd %v: %v\n%s", args, err, out)
		}
	}
	return c
}
