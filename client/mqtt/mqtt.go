// Package mqtt registers a device with a Device Provisioning Service — dpsd
// or Azure IoT Hub DPS — over MQTT 3.1.1: MQTT over TLS (port 8883) or MQTT
// over WebSocket (wss://host/$iothub/websocket, port 443). It is the MQTT
// transport of the device client in github.com/dpsd/dpsd/client, with the
// same configuration, results and errors; it lives in its own package so
// that HTTPS-only users do not import an MQTT library.
//
//	cert, _ := client.LoadX509KeyPair("device.pem", "device.key", nil)
//	state, err := mqtt.Register(ctx, mqtt.Config{Config: client.Config{
//		Endpoint:       "dps.example.com:8883",
//		IDScope:        "0ne00111111",
//		RegistrationID: "device-01",
//		Certificate:    &cert,
//	}})
//
// Like the Azure device SDKs it connects with the registration ID as client
// ID and {idScope}/registrations/{registrationId}/api-version=... as user
// name, a SAS token as password for a symmetric key (none for X.509),
// subscribes to $dps/registrations/res/#, publishes the register request and
// polls the operation until it ends. Answers with status 429 or ≥ 500 are
// retried after their retry-after; a lost connection is re-established with
// backoff, resuming the poll of the operation it had.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/wait"
)

// Ports and path of the two MQTT transports.
const (
	DefaultPort          = 8883
	DefaultWebSocketPort = 443
	WebSocketPath        = "/$iothub/websocket"
)

// Config is the device client's configuration plus the MQTT settings.
// Endpoint is host[:port]: the MQTT listener (default port 8883), or with
// WebSocket the HTTPS listener (default port 443). HTTPClient is not used.
type Config struct {
	client.Config
	// WebSocket selects MQTT over WebSocket.
	WebSocket bool
	// KeepAlive is the MQTT keep-alive (default 60 s).
	KeepAlive time.Duration
	// ConnectTimeout bounds the TCP, TLS and MQTT connect (default 30 s).
	ConnectTimeout time.Duration
	// ResponseTimeout bounds the wait for the answer to one request; when it
	// passes, the client reconnects and asks again (default 60 s).
	ResponseTimeout time.Duration
}

// ConnectError is a CONNACK that refused the connection.
type ConnectError struct {
	ReturnCode byte
	Err        error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("the provisioning service refused the MQTT connection: %v (CONNACK %#02x)", e.Err, e.ReturnCode)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Temporary reports whether the refusal may pass (server unavailable).
func (e *ConnectError) Temporary() bool { return e.ReturnCode == packets.ErrRefusedServerUnavailable }

// Register registers the device over MQTT and waits for its assignment. As
// client.Register, it returns the registration state when the status is
// "assigned"; a *client.StatusError with the state when it is "failed" or
// "disabled"; a *client.Error when the service answers a request with an
// error status (e.g. 401 for credentials it refuses); a *ConnectError when
// it refuses the connection. Throttling, server errors and lost connections
// are retried until ctx ends.
func Register(ctx context.Context, cfg Config) (*client.RegistrationState, error) {
	if cfg.IDScope == "" || cfg.RegistrationID == "" {
		return nil, errors.New("IDScope and RegistrationID are required")
	}
	if cfg.TPM != nil {
		return nil, errors.New("TPM attestation is not available over MQTT (DPS offers it over HTTPS and AMQP only); register over HTTPS with client.Register")
	}
	if (cfg.Certificate == nil) == (cfg.SymmetricKey == nil) {
		return nil, errors.New("give exactly one of Certificate (X.509) and SymmetricKey")
	}
	broker, err := brokerURL(cfg)
	if err != nil {
		return nil, err
	}
	backoff := time.Second
	s := &session{cfg: cfg, broker: broker}
	for {
		st, err := s.run(ctx)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
			}
			return st, err
		}
		delay := backoff + rand.N(backoff/2+1)
		if err := wait.Sleep(ctx, delay); err != nil {
			return nil, fmt.Errorf("%w (last error: %v)", err, s.lastErr)
		}
		backoff = min(2*backoff, time.Minute)
	}
}

func brokerURL(cfg Config) (string, error) {
	ep := cfg.Endpoint
	if ep == "" {
		ep = client.DefaultEndpoint
	}
	port := DefaultPort
	if cfg.WebSocket {
		port = DefaultWebSocketPort
	}
	if _, _, err := net.SplitHostPort(ep); err != nil {
		if strings.Contains(ep, ":") && !strings.HasPrefix(ep, "[") {
			ep = "[" + ep + "]" // a bare IPv6 address
		}
		ep = net.JoinHostPort(strings.Trim(ep, "[]"), strconv.Itoa(port))
	}
	if cfg.WebSocket {
		return "wss://" + ep + WebSocketPath, nil
	}
	return "mqtts://" + ep, nil
}

// Username is the CONNECT user name of a device.
func Username(idScope, registrationID, apiVersion, clientVersion string) string {
	u := idScope + "/registrations/" + registrationID + "/api-version=" + url.QueryEscape(apiVersion)
	if clientVersion != "" {
		u += "&ClientVersion=" + url.QueryEscape(clientVersion)
	}
	return u
}

// session is one registration across connections: the operation being
// polled survives a reconnect.
type session struct {
	cfg     Config
	broker  string
	opID    string
	rid     uint64
	lastErr error
}

// response is one answer on $dps/registrations/res/#.
type response struct {
	status     int
	rid        string
	retryAfter time.Duration
	body       []byte
}

type connLost struct{ err error }

func (e *connLost) Error() string { return "MQTT connection lost: " + e.err.Error() }
func (e *connLost) Unwrap() error { return e.err }

var errNoResponse = errors.New("no answer from the provisioning service")

// run connects and registers (or resumes polling).
func (s *session) run(ctx context.Context) (*client.RegistrationState, error) {
	cfg := s.cfg
	apiVersion := cfg.RequestAPIVersion()
	host := strings.TrimPrefix(strings.TrimPrefix(s.broker, "mqtts://"), "wss://")
	host, _, _ = strings.Cut(host, "/")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.RootCAs, ServerName: host}
	if cfg.Certificate != nil {
		tc.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	responses := make(chan response, 16)
	lost := make(chan error, 1)
	opts := paho.NewClientOptions().
		AddBroker(s.broker).
		SetClientID(cfg.RegistrationID).
		SetUsername(Username(cfg.IDScope, cfg.RegistrationID, apiVersion, cfg.UserAgent)).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(false).
		SetKeepAlive(durationOr(cfg.KeepAlive, 60*time.Second)).
		SetConnectTimeout(durationOr(cfg.ConnectTimeout, 30*time.Second)).
		SetWriteTimeout(30 * time.Second).
		SetTLSConfig(tc).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if cfg.SymmetricKey != nil {
		opts.SetPassword(client.SASToken(cfg.IDScope, cfg.RegistrationID, cfg.SymmetricKey, time.Now().Add(time.Hour)))
	}
	c := paho.NewClient(opts)
	if err := s.wait(ctx, c.Connect(), lost); err != nil {
		var rc byte
		for code := byte(1); code <= 5; code++ {
			if errors.Is(err, packets.ConnErrors[code]) {
				rc = code
			}
		}
		if rc != 0 {
			return nil, s.fail(&ConnectError{ReturnCode: rc, Err: err})
		}
		return nil, s.fail(fmt.Errorf("connecting to %s: %w", s.broker, err))
	}
	defer c.Disconnect(250)
	handler := func(_ paho.Client, m paho.Message) {
		r, ok := parseResponse(m.Topic(), m.Payload())
		if !ok {
			return
		}
		select {
		case responses <- r:
		default: // nobody waits for it
		}
	}
	if err := s.wait(ctx, c.Subscribe("$dps/registrations/res/#", 1, handler), lost); err != nil {
		return nil, s.fail(fmt.Errorf("subscribing to $dps/registrations/res/#: %w", err))
	}

	registerPayload, _ := json.Marshal(cfg.RegisterBody())
	backoff := 2 * time.Second
	for {
		s.rid++
		rid := strconv.FormatUint(s.rid, 10)
		var topic string
		var payload []byte
		if s.opID == "" {
			topic, payload = "$dps/registrations/PUT/iotdps-register/?$rid="+rid, registerPayload
		} else {
			topic, payload = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="+rid+"&operationId="+s.opID, []byte(" ")
		}
		if err := s.wait(ctx, c.Publish(topic, 1, false, payload), lost); err != nil {
			return nil, s.fail(fmt.Errorf("publishing %s: %w", topic, err))
		}
		r, err := s.await(ctx, responses, lost, rid)
		if err != nil {
			return nil, s.fail(err)
		}
		switch {
		case r.status == 429 || r.status >= 500:
			// Throttled or failing: ask again, after retry-after.
			e := errorFrom(r)
			s.lastErr = e
			delay := r.retryAfter
			if delay == 0 {
				delay = backoff
				backoff = min(2*backoff, time.Minute)
			}
			if err := wait.Sleep(ctx, delay); err != nil {
				return nil, fmt.Errorf("%w (last error: %v)", err, e)
			}
			continue
		case r.status >= 300:
			return nil, errorFrom(r)
		}
		backoff = 2 * time.Second
		var op client.OperationStatus
		if err := json.Unmarshal(r.body, &op); err != nil {
			return nil, fmt.Errorf("decoding the answer on %s: %w", topic, err)
		}
		if op.Status == "assigning" || op.Status == "unassigned" {
			if op.OperationID == "" {
				return nil, errors.New("the service answered assigning without an operationId")
			}
			s.opID = op.OperationID
			delay := r.retryAfter
			if delay == 0 {
				delay = 2 * time.Second
			}
			if err := wait.Sleep(ctx, delay); err != nil {
				return nil, err
			}
			continue
		}
		st := op.RegistrationState
		if st == nil {
			return nil, fmt.Errorf("the service answered status %q without a registrationState", op.Status)
		}
		c.Unsubscribe("$dps/registrations/res/#").WaitTimeout(time.Second)
		if op.Status != "assigned" {
			return st, &client.StatusError{State: st}
		}
		return st, nil
	}
}

func (s *session) fail(err error) error {
	s.lastErr = err
	return err
}

// wait waits for a paho token, the connection's loss or ctx.
func (s *session) wait(ctx context.Context, t paho.Token, lost <-chan error) error {
	select {
	case <-t.Done():
		return t.Error()
	case err := <-lost:
		return &connLost{err}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits for the answer to request rid; answers to other requests (an
// earlier one that timed out) are dropped.
func (s *session) await(ctx context.Context, responses <-chan response, lost <-chan error, rid string) (response, error) {
	timer := time.NewTimer(durationOr(s.cfg.ResponseTimeout, time.Minute))
	defer timer.Stop()
	for {
		select {
		case r := <-responses:
			if r.rid == rid {
				return r, nil
			}
		case err := <-lost:
			return response{}, &connLost{err}
		case <-timer.C:
			return response{}, errNoResponse
		case <-ctx.Done():
			return response{}, ctx.Err()
		}
	}
}

// parseResponse reads $dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}].
func parseResponse(topic string, payload []byte) (response, bool) {
	rest, ok := strings.CutPrefix(topic, "$dps/registrations/res/")
	if !ok {
		return response{}, false
	}
	status, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return response{}, false
	}
	r := response{body: payload}
	var err error
	if r.status, err = strconv.Atoi(status); err != nil {
		return response{}, false
	}
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "$rid":
			r.rid = v
		case strings.EqualFold(k, "retry-after"):
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				r.retryAfter = time.Duration(min(n, 300)) * time.Second
			}
		}
	}
	return r, true
}

func errorFrom(r response) *client.Error {
	e := &client.Error{StatusCode: r.status, RetryAfter: r.retryAfter}
	_ = json.Unmarshal(r.body, e)
	return e
}

// retryable reports whether a new connection may succeed: lost connections,
// network errors, no answer, a server that was unavailable. Refusals, TLS
// verification failures and the context ending are final.
func retryable(err error) bool {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return ce.Temporary()
	}
	var cl *connLost
	if errors.As(err, &cl) || errors.Is(err, errNoResponse) {
		return true
	}
	var de *client.Error
	var se *client.StatusError
	if errors.As(err, &de) || errors.As(err, &se) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var alert tls.AlertError
	var rh tls.RecordHeaderError
	if errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &alert) || errors.As(err, &rh) {
		return false
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"EOF", "connection reset", "connection refused", "broken pipe", "i/o timeout"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
