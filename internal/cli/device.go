package cli

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/client/mqtt"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/server"
)

func init() { register(newDeviceCmd) }

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
	caFile         string
	payload        string
	transport      string
	timeout        time.Duration
	output         string
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
	fl.StringVar(&f.registrationID, "registration-id", "", "registration ID (default: the certificate's CN)")
	fl.StringVar(&f.certFile, "cert", "", "device certificate PEM, leaf first, then its chain (X.509)")
	fl.StringVar(&f.keyFile, "key", "", "device private key PEM (X.509)")
	fl.StringVar(&f.passphrase, "passphrase", "", "passphrase of an encrypted --key")
	fl.StringVar(&f.symmetricKey, "symmetric-key", "", "device symmetric key, base64")
	fl.StringVar(&f.groupKey, "group-key", "", "enrollment group key, base64: the device key is derived from it")
	fl.StringVar(&f.caFile, "ca-file", "", "CA certificate PEM that signs the server certificate (default: the local server's, or DPSD_CA_FILE)")
	fl.StringVar(&f.payload, "payload", "", "JSON payload to send with the registration")
	fl.StringVar(&f.transport, "transport", "https", "transport: https, mqtt (MQTT over TLS) or mqtt-ws (MQTT over WebSocket)")
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
	switch {
	case x509Given && keyGiven, !x509Given && !keyGiven:
		return withHint(errors.New("give either --cert and --key (X.509) or --symmetric-key / --group-key"), "see 'dpsd device register --help'")
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
	if f.payload != "" {
		if !json.Valid([]byte(f.payload)) {
			return withHint(errors.New("--payload is not valid JSON"), `e.g. --payload '{"modelId":"dtmi:example;1"}'`)
		}
		cfg.Payload = json.RawMessage(f.payload)
	}
	caFile := firstNonEmpty(f.caFile, e.getenv("DPSD_CA_FILE"))
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
			cfg.Endpoint = firstNonEmpty(cfg.Endpoint, endpoint)
			cfg.IDScope = firstNonEmpty(cfg.IDScope, info.IDScope)
			caFile = firstNonEmpty(caFile, info.ServerCAFile)
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
	var err error
	switch f.transport {
	case "mqtt", "mqtt-ws":
		state, err = mqtt.Register(ctx, mqtt.Config{Config: cfg, WebSocket: f.transport == "mqtt-ws"})
	default:
		state, err = client.Register(ctx, cfg)
	}
	var ce *client.Error
	var se *client.StatusError
	var me *mqtt.ConnectError
	if state != nil {
		if perr := f.print(e, state); perr != nil {
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

func (f *deviceFlags) print(e *env, s *client.RegistrationState) error {
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
		return "", withHint(errors.New("the local server has no MQTT listener"), "start it with --mqtt-addr (default :8883), use --transport mqtt-ws or https, or give --endpoint")
	}
	return st.MQTTEndpoint, nil
}
