// Package client registers a device with a Device Provisioning Service —
// dpsd or Azure IoT Hub DPS — over HTTPS, and returns the IoT hub the device
// is assigned to. It authenticates with an X.509 certificate (the TLS client
// certificate), a symmetric key (a SAS token) or a TPM (Config.TPM; the
// sub-package client/tpm opens one), honours Retry-After and throttling with
// backoff, and stops when its context ends. A device may also ask for a
// certificate (Config.CSR, NewCSR): the service returns it with the
// assignment.
//
//	cert, _ := client.LoadX509KeyPair("device.pem", "device.key", nil)
//	state, err := client.Register(ctx, client.Config{
//		Endpoint:       "dps.example.com:8443",
//		IDScope:        "0ne00111111",
//		RegistrationID: "device-01",
//		Certificate:    &cert,
//	})
//	// state.AssignedHub, state.DeviceID
//
// The package depends on the standard library only; the MQTT transport is in
// the sub-package client/mqtt, the TPM access in client/tpm.
package client

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/wait"
)

// DefaultEndpoint is Azure's global device endpoint.
const DefaultEndpoint = "global.azure-devices-provisioning.net"

// DefaultAPIVersion is the device API version sent; every DPS accepts it.
const DefaultAPIVersion = "2019-03-31"

// CSRAPIVersion is the device API version sent with a CSR: the first whose
// register request carries csr and whose answer carries
// issuedCertificateChain.
const CSRAPIVersion = "2025-07-01-preview"

// Config describes one device and where it registers.
type Config struct {
	// Endpoint is host[:port] of the device API (default DefaultEndpoint, port 443).
	Endpoint       string
	IDScope        string
	RegistrationID string
	// Certificate authenticates an X.509 device; its chain (leaf first, then
	// intermediates) is sent in the TLS handshake.
	Certificate *tls.Certificate
	// SymmetricKey authenticates a symmetric-key device: the enrollment's key,
	// or for a group DeriveKey(groupKey, registrationID).
	SymmetricKey []byte
	// TPM authenticates a device by TPM attestation (HTTPS only; DPS does not
	// offer it over MQTT). RegistrationID is then usually the one derived
	// from the endorsement key (client/tpm's Device.RegistrationID).
	TPM TPM
	// RootCAs verifies the server (nil: the system roots).
	RootCAs *x509.CertPool
	// Payload is sent with the register request (optional JSON).
	Payload json.RawMessage
	// CSR, when set, is a certificate signing request (DER; see NewCSR)
	// whose subject CN is RegistrationID: the service issues a certificate
	// for its key, returned in RegistrationState.IssuedCertificateChain.
	CSR []byte
	// APIVersion defaults to DefaultAPIVersion, or CSRAPIVersion with a CSR.
	APIVersion string
	// HTTPClient overrides the client built from the settings above (its
	// transport must present Certificate for X.509).
	HTTPClient *http.Client
	// UserAgent is sent as User-Agent.
	UserAgent string
}

// RegistrationState is the registration record the service returns.
type RegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUTC     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 string          `json:"status"`
	Substatus              string          `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	Etag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
	X509                   *struct {
		EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	} `json:"x509,omitempty"`
	SymmetricKey *struct {
		EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	} `json:"symmetricKey,omitempty"`
	TPM *struct {
		// AuthenticationKey is the activation blob (base64) carrying the
		// device's IoT hub key; Register imports it into the TPM.
		AuthenticationKey string `json:"authenticationKey,omitempty"`
	} `json:"tpm,omitempty"`
	// IssuedCertificateChain answers Config.CSR: base64 DER certificates,
	// the device's first, each issued by the next, up to the root (see
	// IssuedCertificates and IssuedKeyPair).
	IssuedCertificateChain []string `json:"issuedCertificateChain,omitempty"`
}

// RequestAPIVersion is the api-version the requests carry: APIVersion, or
// else CSRAPIVersion with a CSR and DefaultAPIVersion without.
func (c *Config) RequestAPIVersion() string {
	switch {
	case c.APIVersion != "":
		return c.APIVersion
	case len(c.CSR) > 0:
		return CSRAPIVersion
	}
	return DefaultAPIVersion
}

// RegisterBody is the register request's body, whatever the transport:
// the registration ID, the payload and the CSR.
func (c *Config) RegisterBody() map[string]any {
	body := map[string]any{"registrationId": c.RegistrationID}
	if len(c.Payload) > 0 {
		body["payload"] = c.Payload
	}
	if len(c.CSR) > 0 {
		body["csr"] = base64.StdEncoding.EncodeToString(c.CSR)
	}
	return body
}

// TPM is a device's TPM as TPM attestation uses it; client/tpm implements it
// with a TPM 2.0 device or simulator.
type TPM interface {
	// EndorsementKey and StorageRootKey return the marshalled TPM2B_PUBLIC
	// of the EK and of the SRK.
	EndorsementKey() ([]byte, error)
	StorageRootKey() ([]byte, error)
	// ActivateIdentityKey imports the key of an activation blob (the
	// service's challenge, then the hub key at assignment) into the TPM,
	// where it replaces the previous one.
	ActivateIdentityKey(blob []byte) error
	// Sign returns the HMAC-SHA256 of data with the imported key.
	Sign(data []byte) ([]byte, error)
}

// OperationStatus is the answer to a register request or a poll.
type OperationStatus struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
}

// Error is a refusal by the service (HTTP status ≥ 300).
type Error struct {
	StatusCode int    // HTTP status
	ErrorCode  int    `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("provisioning service answered HTTP %d", e.StatusCode)
	}
	return fmt.Sprintf("%s (HTTP %d, errorCode %d, trackingId %s)", e.Message, e.StatusCode, e.ErrorCode, e.TrackingID)
}

// Temporary reports whether the request may succeed later (429 and 5xx).
func (e *Error) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// StatusError is a registration that ended in "failed" or "disabled".
type StatusError struct {
	State *RegistrationState
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("registration of %q ended with status %s", e.State.RegistrationID, e.State.Status)
	if e.State.ErrorMessage != "" {
		msg += ": " + e.State.ErrorMessage
	}
	if e.State.ErrorCode != 0 {
		msg += fmt.Sprintf(" (errorCode %d)", e.State.ErrorCode)
	}
	return msg
}

// Register registers the device and waits for its assignment. It returns the
// registration state when the status is "assigned"; a *StatusError when it
// is "failed" or "disabled"; an *Error when the service refuses the request.
// Throttling (429) and server errors are retried with backoff until ctx ends.
func Register(ctx context.Context, cfg Config) (*RegistrationState, error) {
	c, err := newConn(cfg)
	if err != nil {
		return nil, err
	}
	body := cfg.RegisterBody()
	if cfg.TPM != nil {
		ek, err := cfg.TPM.EndorsementKey()
		if err != nil {
			return nil, fmt.Errorf("reading the TPM's endorsement key: %w", err)
		}
		srk, err := cfg.TPM.StorageRootKey()
		if err != nil {
			return nil, fmt.Errorf("reading the TPM's storage root key: %w", err)
		}
		body["tpm"] = map[string]string{"endorsementKey": base64.StdEncoding.EncodeToString(ek), "storageRootKey": base64.StdEncoding.EncodeToString(srk)}
	}
	b, _ := json.Marshal(body)
	op, err := c.retry(ctx, http.MethodPut, c.path("/register"), b)
	var ch *tpmChallenge
	if errors.As(err, &ch) {
		// TPM attestation: the first register (without Authorization) is
		// answered 401 with a key only this TPM can import; the same
		// request, signed with that key, follows.
		if err := cfg.TPM.ActivateIdentityKey(ch.blob); err != nil {
			return nil, fmt.Errorf("importing the service's challenge into the TPM: %w", err)
		}
		c.keyName = ch.keyName
		op, err = c.retry(ctx, http.MethodPut, c.path("/register"), b)
	}
	if err != nil {
		return nil, err
	}
	for op.status.Status == "assigning" || op.status.Status == "unassigned" {
		if op.status.OperationID == "" {
			return nil, errors.New("the service answered assigning without an operationId")
		}
		if err := wait.Sleep(ctx, op.retryAfter); err != nil {
			return nil, err
		}
		op, err = c.retry(ctx, http.MethodGet, c.path("/operations/"+url.PathEscape(op.status.OperationID)), nil)
		if err != nil {
			return nil, err
		}
	}
	st := op.status.RegistrationState
	if st == nil {
		return nil, fmt.Errorf("the service answered status %q without a registrationState", op.status.Status)
	}
	if op.status.Status != "assigned" {
		return st, &StatusError{State: st}
	}
	if len(cfg.CSR) > 0 && len(st.IssuedCertificateChain) == 0 {
		return st, errors.New("the service assigned the device without issuedCertificateChain, the certificate it asked for")
	}
	if cfg.TPM != nil {
		if st.TPM == nil || st.TPM.AuthenticationKey == "" {
			return st, errors.New("the service assigned the device without registrationState.tpm.authenticationKey, the hub key for the TPM")
		}
		blob, err := base64.StdEncoding.DecodeString(st.TPM.AuthenticationKey)
		if err != nil {
			return st, errors.New("registrationState.tpm.authenticationKey is not base64")
		}
		if err := cfg.TPM.ActivateIdentityKey(blob); err != nil {
			return st, fmt.Errorf("importing the hub key into the TPM: %w", err)
		}
	}
	return st, nil
}

// DeriveKey returns the key of one device of a symmetric-key enrollment group:
// HMAC-SHA256(groupKey, registrationID).
func DeriveKey(groupKey []byte, registrationID string) []byte {
	m := hmac.New(sha256.New, groupKey)
	m.Write([]byte(registrationID))
	return m.Sum(nil)
}

// SASToken returns a device SAS token for registrationID, valid until expiry.
func SASToken(idScope, registrationID string, key []byte, expiry time.Time) string {
	tok, _ := sasToken(idScope, registrationID, "registration", expiry, func(data []byte) ([]byte, error) {
		m := hmac.New(sha256.New, key)
		m.Write(data)
		return m.Sum(nil), nil
	})
	return tok
}

// sasToken builds a device SAS token whose signature sign computes (in
// memory, or in a TPM).
func sasToken(idScope, registrationID, keyName string, expiry time.Time, sign func([]byte) ([]byte, error)) (string, error) {
	sr := strings.ToLower(url.QueryEscape(idScope + "/registrations/" + registrationID))
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac, err := sign([]byte(sr + "\n" + se))
	if err != nil {
		return "", err
	}
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=" + url.QueryEscape(keyName), nil
}

type conn struct {
	cfg  Config
	base string
	http *http.Client
	// keyName is the key name of the TPM challenge; set once the TPM
	// holds the challenge's key, which then signs every request.
	keyName string
}

// tpmChallenge is the 401 answer to a TPM device's unsigned register.
type tpmChallenge struct {
	blob    []byte
	keyName string
}

func (e *tpmChallenge) Error() string { return "TPM challenge" }

func newConn(cfg Config) (*conn, error) {
	if cfg.IDScope == "" || cfg.RegistrationID == "" {
		return nil, errors.New("IDScope and RegistrationID are required")
	}
	if n := btoi(cfg.Certificate != nil) + btoi(cfg.SymmetricKey != nil) + btoi(cfg.TPM != nil); n != 1 {
		return nil, errors.New("give exactly one of Certificate (X.509), SymmetricKey and TPM")
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = DefaultEndpoint
	}
	cfg.APIVersion = cfg.RequestAPIVersion()
	hc := cfg.HTTPClient
	if hc == nil {
		host := cfg.Endpoint
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs, ServerName: host}
		if cfg.Certificate != nil {
			tc.Certificates = []tls.Certificate{*cfg.Certificate}
		}
		hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	}
	return &conn{cfg: cfg, base: "https://" + cfg.Endpoint, http: hc}, nil
}

func (c *conn) path(suffix string) string {
	return "/" + url.PathEscape(c.cfg.IDScope) + "/registrations/" + url.PathEscape(c.cfg.RegistrationID) + suffix
}

type answer struct {
	status     OperationStatus
	retryAfter time.Duration
}

// retry sends a request until it gets a final answer, backing off on 429 and
// 5xx (honouring Retry-After) and on network errors.
func (c *conn) retry(ctx context.Context, method, path string, body []byte) (*answer, error) {
	backoff := time.Second
	for {
		a, err := c.do(ctx, method, path, body)
		if err == nil {
			return a, nil
		}
		var e *Error
		temporary := errors.As(err, &e) && e.Temporary() || !errors.As(err, &e) && ctx.Err() == nil && isNetErr(err)
		if !temporary {
			return nil, err
		}
		delay := backoff + rand.N(backoff/2+1)
		if e != nil && e.RetryAfter > 0 {
			delay = e.RetryAfter
		}
		if err := wait.Sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("%w (last error: %v)", err, errAsText(e, err))
		}
		backoff = min(backoff*2, time.Minute)
	}
}

func (c *conn) do(ctx context.Context, method, path string, body []byte) (*answer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path+"?api-version="+url.QueryEscape(c.cfg.APIVersion), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if c.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	switch {
	case c.cfg.SymmetricKey != nil:
		req.Header.Set("Authorization", SASToken(c.cfg.IDScope, c.cfg.RegistrationID, c.cfg.SymmetricKey, time.Now().Add(time.Hour)))
	case c.cfg.TPM != nil && c.keyName != "":
		tok, err := sasToken(c.cfg.IDScope, c.cfg.RegistrationID, c.keyName, time.Now().Add(time.Hour), c.cfg.TPM.Sign)
		if err != nil {
			return nil, fmt.Errorf("signing with the TPM: %w", err)
		}
		req.Header.Set("Authorization", tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &transportError{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, &transportError{err}
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"))
	if resp.StatusCode == http.StatusUnauthorized && c.cfg.TPM != nil && c.keyName == "" {
		if ch := parseChallenge(b); ch != nil {
			return nil, ch
		}
	}
	if resp.StatusCode >= 300 {
		e := &Error{StatusCode: resp.StatusCode, RetryAfter: retryAfter}
		_ = json.Unmarshal(b, e)
		return nil, e
	}
	a := &answer{retryAfter: retryAfter}
	if a.retryAfter == 0 {
		a.retryAfter = 2 * time.Second
	}
	if err := json.Unmarshal(b, &a.status); err != nil {
		return nil, fmt.Errorf("decoding the answer to %s %s: %w", method, path, err)
	}
	return a, nil
}

// parseChallenge reads a TPM challenge: {"authenticationKey": base64 blob,
// "keyName": ...}. The key name defaults to "registration", as in the C#
// SDK.
func parseChallenge(b []byte) *tpmChallenge {
	var v struct {
		AuthenticationKey string `json:"authenticationKey"`
		KeyName           string `json:"keyName"`
	}
	if json.Unmarshal(b, &v) != nil || v.AuthenticationKey == "" {
		return nil
	}
	blob, err := base64.StdEncoding.DecodeString(v.AuthenticationKey)
	if err != nil {
		return nil
	}
	if v.KeyName == "" {
		v.KeyName = "registration"
	}
	return &tpmChallenge{blob: blob, keyName: v.KeyName}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// parseRetryAfter reads integer seconds, clamped to 1..300 as the C SDK does.
func parseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 300)) * time.Second
}

// isNetErr reports a transient network failure. Certificate and TLS
// handshake failures are not: retrying cannot fix them.
func isNetErr(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var alert tls.AlertError
	var rh tls.RecordHeaderError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &alert) || errors.As(err, &rh) {
		return false
	}
	// Any other failure to exchange the request (refused or reset
	// connections, a server that closed an idle connection as it died) is
	// worth retrying: registering again is safe.
	var te *transportError
	return errors.As(err, &te)
}

// transportError marks a failure of the HTTP exchange itself, as opposed to
// a malformed request or an answer the service gave.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

func errAsText(e *Error, err error) string {
	if e != nil {
		return e.Error()
	}
	return err.Error()
}
