package cli

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/client/mqtt"
	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/server"
)

func newDeviceCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "device", Short: "Act as a device: register with a provisioning service"}
	c.AddCommand(newDeviceRegisterCmd(e))
	return c
}

type deviceFlags struct {
	local          localFlags
	endpoint       string
	idScope        string
	registrationID string
	certFile       string
	keyFile        string
	passphrase     string
	symmetricKey   string
	groupKey       string
	attestation    string
	tpm            string
	caFile         string
	payload        string
	transport      string
	timeout        time.Duration
	output         string
	// Certificate issuance.
	csr        bool
	csrFile    string
	csrKeyType string
	csrKeyOut  string
	certOut    string
	force      bool
}

func newDeviceRegisterCmd(e *env) *cobra.Command {
	var f deviceFlags
	c := &cobra.Command{
		Use:   "register",
		Short: "Register a device and print its registration state",
		Long: `Register a device the way firmware does, with the Go device client
(github.com/dpsd/dpsd/client), and print the final registration state.

X.509: --cert (the device certificate, followed by its chain for a group) and
--key (with --passphrase if it is encrypted); the registration ID defaults to
the certificate's CN. Symmetric key: --symmetric-key (the device's key), or
--group-key to derive the device key of a symmetric-key enrollment group.
TPM: --tpm with a TPM 2.0 device (/dev/tpmrm0, the default with
--attestation tpm, or /dev/tpm0) or the host:port of a Microsoft TPM
simulator (its platform port is the next one); the EK (0x81010001) and SRK
(0x81000001) are created if the TPM has none, the registration ID defaults
to the one derived from the EK, and the IoT hub key the service returns is
kept in the TPM at 0x81000100. TPM attestation is HTTPS only (DPS does not
offer it over MQTT). --attestation names the mechanism when the other flags
do not.

--csr asks for a certificate: a new key (--csr-key-type) and a CSR for the
registration ID are made and sent; the certificate chain the service issues
(the device's certificate first, up to the root) is written to --cert-out and
the key to --csr-key-out (mode 0600). The enrollment must name an issuing CA
(dpsd enrollment update --issuing-ca NAME). --csr-file sends a CSR made
elsewhere (openssl req; PEM or DER) whose key stays where it is. Either
way the device can register again with the certificate (--cert, --key).

--transport chooses how: https (the device API), mqtt (MQTT 3.1.1 over TLS,
port 8883) or mqtt-ws (MQTT over WebSocket on the HTTPS port, path
/$iothub/websocket).

Without --endpoint, --id-scope and --ca-file, the local server's values are
used (see 'dpsd info'): its device endpoint for https and mqtt-ws, its MQTT
endpoint for mqtt. Works against Azure DPS too: --endpoint
global.azure-devices-provisioning.net and the system roots (--ca-file "").`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return f.run(c.Context(), e) },
	}
	fl := c.Flags()
	f.local.add(c)
	fl.StringVar(&f.endpoint, "endpoint", "", "device endpoint host[:port]: the HTTPS listener for https and mqtt-ws, the MQTT listener for mqtt (default: the local server's)")
	fl.StringVar(&f.idScope, "id-scope", "", "ID scope (default: the local instance's)")
	fl.StringVar(&f.registrationID, "registration-id", "", "registration ID (default: the certificate's CN; for TPM, derived from the EK)")
	fl.StringVar(&f.certFile, "cert", "", "device certificate PEM, leaf first, then its chain (X.509)")
	fl.StringVar(&f.keyFile, "key", "", "device private key PEM (X.509)")
	fl.StringVar(&f.passphrase, "passphrase", "", "passphrase of an encrypted --key")
	fl.StringVar(&f.symmetricKey, "symmetric-key", "", "device symmetric key, base64")
	fl.StringVar(&f.groupKey, "group-key", "", "enrollment group key, base64: the device key is derived from it")
	fl.StringVar(&f.attestation, "attestation", "", "attestation mechanism: x509, symmetrickey or tpm (default: from the other flags)")
	fl.StringVar(&f.tpm, "tpm", "", "TPM: device path (default "+defaultTPM+") or a TPM simulator's host:port")
	fl.StringVar(&f.caFile, "ca-file", "", "CA certificate PEM that signs the server certificate (default: the local server's, or DPSD_CA_FILE)")
	fl.StringVar(&f.payload, "payload", "", "JSON payload to send with the registration")
	fl.StringVar(&f.transport, "transport", "https", "transport: https, mqtt (MQTT over TLS) or mqtt-ws (MQTT over WebSocket)")
	fl.BoolVar(&f.csr, "csr", false, "ask for a certificate: make a new key and a CSR for the registration ID and send it")
	fl.StringVar(&f.csrFile, "csr-file", "", "ask for a certificate with this CSR (PEM or DER; its subject CN is the registration ID)")
	fl.StringVar(&f.csrKeyType, "csr-key-type", string(pki.DefaultKeyType), "key type of the new key with --csr: ecdsa-p256, rsa-2048 or rsa-4096")
	fl.StringVar(&f.csrKeyOut, "csr-key-out", "", "file to write the new key to with --csr, mode 0600 (default <registration-id>-key.pem)")
	fl.StringVar(&f.certOut, "cert-out", "", "file to write the issued certificate chain to (default <registration-id>-cert.pem)")
	fl.BoolVar(&f.force, "force", false, "overwrite --cert-out and --csr-key-out if they exist")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this long")
	addOutputFlag(c, &f.output)
	return c
}

func (f *deviceFlags) run(ctx context.Context, e *env) error {
	if err := checkOutput(f.output); err != nil {
		return err
	}
	switch f.transport {
	case "https", "mqtt", "mqtt-ws":
	default:
		return withHint(fmt.Errorf("unknown transport %q", f.transport), "use --transport https, mqtt or mqtt-ws")
	}
	cfg := client.Config{Endpoint: f.endpoint, IDScope: f.idScope, RegistrationID: f.registrationID, UserAgent: "dpsd/" + Version}
	x509Given, keyGiven := f.certFile != "" || f.keyFile != "", f.symmetricKey != "" || f.groupKey != ""
	tpmGiven := f.tpm != "" || strings.EqualFold(f.attestation, "tpm")
	if err := f.checkAttestation(x509Given, keyGiven, tpmGiven); err != nil {
		return err
	}
	switch {
	case tpmGiven:
		if f.transport != "https" {
			return withHint(fmt.Errorf("TPM attestation is not available over %s: DPS offers it over HTTPS (and AMQP) only", f.transport), "use --transport https")
		}
		dev, err := clienttpm.Open(cmp.Or(f.tpm, defaultTPM))
		if err != nil {
			return withHint(err, "give --tpm: a TPM device (/dev/tpmrm0, /dev/tpm0; reading it needs the tss group or root) or a TPM simulator's host:port")
		}
		defer dev.Close()
		if cfg.RegistrationID == "" {
			if cfg.RegistrationID, err = dev.RegistrationID(); err != nil {
				return withHint(err, "the TPM could not give its endorsement key")
			}
		}
		cfg.TPM = dev
	case x509Given:
		if f.certFile == "" || f.keyFile == "" {
			return withHint(errors.New("--cert and --key go together"), "give both files")
		}
		cert, err := client.LoadX509KeyPair(f.certFile, f.keyFile, []byte(f.passphrase))
		if err != nil {
			return withHint(err, "check --cert, --key and --passphrase")
		}
		cfg.Certificate = &cert
		if cfg.RegistrationID == "" {
			cfg.RegistrationID = cert.Leaf.Subject.CommonName
		}
	default:
		if f.symmetricKey != "" && f.groupKey != "" {
			return withHint(errors.New("--symmetric-key and --group-key are alternatives"), "give the device key, or the group key to derive it from")
		}
		if cfg.RegistrationID == "" {
			return withHint(errors.New("--registration-id is required with a symmetric key"), "give the device's registration ID")
		}
		k := f.symmetricKey + f.groupKey
		key, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return withHint(errors.New("the key is not base64"), "copy the key from 'dpsd enrollment show --show-keys'")
		}
		if f.groupKey != "" {
			key = client.DeriveKey(key, cfg.RegistrationID)
		}
		cfg.SymmetricKey = key
	}
	csr, err := f.certificateRequest(cfg.RegistrationID)
	if err != nil {
		return err
	}
	if csr != nil {
		cfg.CSR = csr.der
	}
	if f.payload != "" {
		if !json.Valid([]byte(f.payload)) {
			return withHint(errors.New("--payload is not valid JSON"), `e.g. --payload '{"modelId":"dtmi:example;1"}'`)
		}
		cfg.Payload = json.RawMessage(f.payload)
	}
	caFile := cmp.Or(f.caFile, e.getenv("DPSD_CA_FILE"))
	if cfg.Endpoint == "" || cfg.IDScope == "" || caFile == "" {
		info, err := readLocal(ctx, &f.local, e.getenv)
		if err != nil && (cfg.Endpoint == "" || cfg.IDScope == "") {
			return withHint(err, "give --endpoint and --id-scope, or run on the server's machine")
		}
		if err == nil {
			endpoint := info.DeviceEndpoint
			if f.transport == "mqtt" && cfg.Endpoint == "" {
				endpoint, err = f.localMQTTEndpoint(e)
				if err != nil {
					return err
				}
			}
			cfg.Endpoint = cmp.Or(cfg.Endpoint, endpoint)
			cfg.IDScope = cmp.Or(cfg.IDScope, info.IDScope)
			caFile = cmp.Or(caFile, info.ServerCAFile)
		}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return withHint(err, "check --ca-file")
		}
		pool := x509.NewCertPool()
		certs, err := pki.ParseCertificates(pem)
		if err != nil {
			return withHint(fmt.Errorf("--ca-file: %w", err), "give the server CA PEM file ('dpsd info' prints it)")
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
		cfg.RootCAs = pool
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	var state *client.RegistrationState
	switch f.transport {
	case "mqtt", "mqtt-ws":
		state, err = mqtt.Register(ctx, mqtt.Config{Config: cfg, WebSocket: f.transport == "mqtt-ws"})
	default:
		state, err = client.Register(ctx, cfg)
	}
	var ce *client.Error
	var se *client.StatusError
	var me *mqtt.ConnectError
	var issued [][2]string
	if csr != nil && err == nil {
		if issued, err = csr.save(state); err != nil {
			return err
		}
	}
	if state != nil {
		if perr := f.print(e, state, cfg.TPM != nil && err == nil, issued); perr != nil {
			return perr
		}
	}
	switch {
	case errors.As(err, &me):
		return withHint(me, "check --id-scope and --registration-id: the MQTT user name is {idScope}/registrations/{registrationId}/api-version=...")
	case errors.As(err, &ce):
		return withHint(ce, "the message says why; fix the enrollment or the device credentials and retry")
	case errors.As(err, &se):
		return withHint(se, "see the registration state above; 'dpsd enrollment show' and 'dpsd linked-hub list' show the enrollment and hubs")
	case errors.Is(err, context.DeadlineExceeded):
		return withHint(err, "the service did not finish within --timeout %s", f.timeout)
	case err != nil:
		return withHint(err, "is the service reachable at %s, and does --ca-file sign its certificate?", cfg.Endpoint)
	}
	return nil
}

// defaultTPM is the TPM device --attestation tpm uses without --tpm: the
// kernel's resource manager.
const defaultTPM = "/dev/tpmrm0"

// checkAttestation checks that exactly one mechanism is given and that
// --attestation, when given, names it.
func (f *deviceFlags) checkAttestation(x509Given, keyGiven, tpmGiven bool) error {
	given := map[string]bool{"x509": x509Given, "symmetrickey": keyGiven, "tpm": tpmGiven}
	n := 0
	for _, g := range given {
		if g {
			n++
		}
	}
	if f.attestation != "" {
		a := strings.ToLower(f.attestation)
		if _, ok := given[a]; !ok {
			return withHint(fmt.Errorf("unknown attestation %q", f.attestation), "use --attestation x509, symmetrickey or tpm")
		}
		if !given[a] && a != "tpm" {
			return withHint(fmt.Errorf("--attestation %s needs its credentials", a), "x509: --cert and --key; symmetrickey: --symmetric-key or --group-key")
		}
	}
	if n != 1 {
		return withHint(errors.New("give one of --cert and --key (X.509), --symmetric-key / --group-key, or --tpm (TPM)"), "see 'dpsd device register --help'")
	}
	return nil
}

// print writes the registration state; hubKeyInTPM says that the TPM
// imported the hub key of a TPM registration.
func (f *deviceFlags) print(e *env, s *client.RegistrationState, hubKeyInTPM bool, issued [][2]string) error {
	if s.TPM != nil {
		// The hub key blob is in the TPM now; it is of no use printed.
		s.TPM.AuthenticationKey = ""
	}
	if f.output == outputJSON {
		return writeJSON(e.stdout, s)
	}
	fields := [][2]string{
		{"registrationId", s.RegistrationID},
		{"status", s.Status},
	}
	add := func(k, v string) {
		if v != "" {
			fields = append(fields, [2]string{k, v})
		}
	}
	add("substatus", s.Substatus)
	add("assignedHub", s.AssignedHub)
	add("deviceId", s.DeviceID)
	if s.X509 != nil {
		add("enrollmentGroupId", s.X509.EnrollmentGroupID)
	}
	if s.SymmetricKey != nil {
		add("enrollmentGroupId", s.SymmetricKey.EnrollmentGroupID)
	}
	if hubKeyInTPM {
		add("hubKey", fmt.Sprintf("in the TPM at %#x", uint32(clienttpm.IdentityKeyHandle)))
	}
	fields = append(fields, issued...)
	if s.ErrorCode != 0 {
		add("errorCode", fmt.Sprint(s.ErrorCode))
	}
	add("errorMessage", s.ErrorMessage)
	add("createdDateTimeUtc", s.CreatedDateTimeUTC)
	add("lastUpdatedDateTimeUtc", s.LastUpdatedDateTimeUTC)
	add("etag", s.Etag)
	return writeFields(e.stdout, fields)
}

// localMQTTEndpoint is the MQTT endpoint the local server wrote to
// server.json.
func (f *deviceFlags) localMQTTEndpoint(e *env) (string, error) {
	dataDir, _ := f.local.resolve(e.getenv)
	st, err := server.ReadState(dataDir)
	if err != nil {
		return "", withHint(fmt.Errorf("cannot read the local server's endpoints: %w", err), "give --endpoint host:8883, or start the server with 'dpsd serve --data %s'", dataDir)
	}
	if st.MQTTEndpoint == "" {
		return "", withHint(errors.New("the local server has no MQTT listener"), "start it with --mqtt-addr (default %s), use --transport mqtt-ws or https, or give --endpoint", server.Defaults().MQTTAddr)
	}
	return st.MQTTEndpoint, nil
}
