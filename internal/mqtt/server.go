// Package mqtt serves the DPS device protocol over MQTT 3.1.1, on its own TLS
// listener (port 8883) and over WebSocket on the HTTPS listener
// (/$iothub/websocket, subprotocol "mqtt").
//
// It is not a broker. Only the DPS topics exist: a device subscribes to
// $dps/registrations/res/#, publishes register and operation-status requests,
// and the answer is published to that device's connection alone. Sessions are
// always clean, QoS is at most 1, wills and retained messages are ignored.
// The transport holds no provisioning logic: each request goes to the
// provisioning pipeline with the CONNECT password (a SAS token) or the TLS
// client chain as credentials, and its answer — or refusal — is rendered on
// $dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}].
//
// # CONNECT
//
// The client ID must be the registration ID and the user name
// {idScope}/registrations/{registrationId}/api-version=...[&ClientVersion=...]
// (see ParseUsername). Credentials are not checked at CONNECT: like Azure, the
// server accepts the connection and answers a register publish with a 401 on
// the response topic, which is what every device SDK reports. CONNACK refuses
// only what cannot be a DPS device:
//
//	0x01 unacceptable protocol version  protocol level is not 4 (MQTT 3.1.1)
//	0x02 identifier rejected            client ID empty or not the user name's registration ID
//	0x04 bad user name or password      user name absent or not the grammar above
//	0x03 server unavailable             the server is shutting down
//
// A CONNECT with another protocol name than "MQTT"/"MQIsdp", or any packet
// before CONNECT, closes the connection without CONNACK.
//
// # What else is refused
//
// Every refusal affects only the connection that caused it, and is logged
// (level info, message "mqtt connection refused" with the reason) and counted
// in dpsd_mqtt_refusals_total:
//
//   - A PUBLISH to any other topic than the two request topics, or a request
//     topic without $rid: nothing is answered (there is no topic to answer
//     on, and no PUBACK), the connection is closed. Azure IoT Hub does the
//     same with topics a device may not use.
//   - A PUBLISH at QoS 2, a PUBREC/PUBREL/PUBCOMP, a malformed packet, a
//     second CONNECT: the connection is closed.
//   - A packet whose payload is over 96 KB (DPS's message limit), or whose
//     remaining length is over MaxPacketBytes: the connection is closed
//     before the body is read.
//   - A SUBSCRIBE to any filter but $dps/registrations/res/# (e.g. "#"): that
//     filter's SUBACK code is 0x80; the connection stays open.
//   - No CONNECT within ConnectTimeout, no packet within 1.5 × the
//     keep-alive, or no register or operation-status request within
//     IdleTimeout (60 s; after an answer, its retry-after is added): the
//     connection is closed. PINGREQs alone do not keep a connection, and
//     keep-alive 0 does not mean for ever.
//
// Responses are delivered only to a connection subscribed to
// $dps/registrations/res/#, at the QoS granted (1 when requested, as every
// SDK does).
package mqtt

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/provisioning"
)

// Transport names, for metrics, logs and provisioning.Request.Transport.
const (
	TransportTLS       = "mqtt"
	TransportWebSocket = "mqtt-ws"
)

// WebSocketPath is where the HTTPS listener serves MQTT over WebSocket.
const WebSocketPath = "/$iothub/websocket"

// Defaults.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
	// DefaultIdleTimeout closes a connection that sends no register or
	// operation-status request for this long: a DPS exchange lasts
	// seconds, and PINGREQs alone do not keep a connection.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultMaxPacketBytes is the largest remaining length read: a 96 KB
	// payload plus room for the topic and the CONNECT fields.
	DefaultMaxPacketBytes = dps.MaxMessageBytes + 4096
	// maxInflight is how many QoS 1 responses may wait for a PUBACK.
	maxInflight = 256
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("mqtt: server closed")

// Provisioner is what the transport needs from the provisioning pipeline
// (*provisioning.Pipeline).
type Provisioner interface {
	Register(ctx context.Context, req provisioning.Request) (*provisioning.Answer, error)
	OperationStatus(ctx context.Context, req provisioning.Request, operationID string) (*provisioning.Answer, error)
	// Refused records a refusal the transport makes itself (a payload that
	// does not parse) in the refusal journal, and returns err.
	Refused(req *provisioning.Request, op string, err error) error
}

var _ Provisioner = (*provisioning.Pipeline)(nil)

// Server serves MQTT connections. Set the fields before the first Serve or
// ServeHTTP; the zero values of the optional ones mean the defaults.
type Server struct {
	Provisioner Provisioner
	Log         *slog.Logger
	Metrics     *Metrics // nil: collected but not exported
	// TLSConfig is the server's TLS configuration for the MQTT listener; it
	// must request (not require) client certificates. Its NextProtos are
	// not used: MQTT clients offer other ALPN protocols, or none.
	TLSConfig *tls.Config

	ConnectTimeout time.Duration // accept to CONNECT, TLS handshake included
	RequestTimeout time.Duration // one pipeline call
	WriteTimeout   time.Duration // one packet write
	// IdleTimeout closes a connection without a register or
	// operation-status request for this long after CONNECT, or after the
	// last answer plus the retry-after it carried (whatever keep-alive the
	// device asked for, 0 included).
	IdleTimeout    time.Duration
	MaxPacketBytes int

	initOnce  sync.Once
	tlsConfig *tls.Config
	ctx       context.Context // canceled when Shutdown gives up waiting
	cancel    context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		if s.Log == nil {
			s.Log = slog.New(slog.DiscardHandler)
		}
		if s.Metrics == nil {
			s.Metrics = NewMetrics(nil)
		}
		if s.TLSConfig != nil {
			s.tlsConfig = s.TLSConfig.Clone()
			s.tlsConfig.NextProtos = nil
		}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	})
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (s *Server) idleTimeout() time.Duration { return durationOr(s.IdleTimeout, DefaultIdleTimeout) }

func (s *Server) maxPacket() int {
	if s.MaxPacketBytes > 0 {
		return s.MaxPacketBytes
	}
	return DefaultMaxPacketBytes
}

// start accounts for a new connection, unless the server is shutting down.
func (s *Server) start() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Serve accepts MQTT-over-TLS connections on ln (a plain TCP listener: the
// server performs the TLS handshake) until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	if s.tlsConfig == nil {
		return errors.New("mqtt: Server.TLSConfig is required")
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.Log.Warn("mqtt accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.start() {
			raw.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			s.serveTLS(raw)
		}()
	}
}

func (s *Server) serveTLS(raw net.Conn) {
	s.Metrics.Connections.WithLabelValues(TransportTLS).Inc()
	deadline := time.Now().Add(durationOr(s.ConnectTimeout, DefaultConnectTimeout))
	tc := tls.Server(raw, s.tlsConfig)
	c := newConn(s, tc, TransportTLS, deadline)
	if !s.track(c) {
		raw.Close()
		return
	}
	defer s.untrack(c)
	raw.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.Metrics.Refusals.WithLabelValues(TransportTLS, "tls_handshake").Inc()
		c.log.Debug("mqtt TLS handshake failed", "err", err)
		raw.Close()
		return
	}
	c.certs = tc.ConnectionState().PeerCertificates
	c.serve()
}

// ServeHTTP serves MQTT over WebSocket (mount it at WebSocketPath on the
// HTTPS listener). The subprotocol "mqtt" must be offered; it is matched
// case-insensitively and echoed as offered (the C SDK offers "MQTT"). The
// HTTPS connection's client certificates are the X.509 credentials.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	fail := func(status, code int, format string, args ...any) {
		httpx.WriteError(w, r, s.Log, dpserr.New(status, code, format, args...))
	}
	if !strings.EqualFold(strings.TrimSuffix(r.URL.Path, "/"), WebSocketPath) {
		fail(http.StatusNotFound, dpserr.CodeNotFound, "no such path; MQTT over WebSocket is served at %s", WebSocketPath)
		return
	}
	if r.Method != http.MethodGet || !websocket.IsWebSocketUpgrade(r) {
		fail(http.StatusBadRequest, dpserr.CodeWebSocketUpgrade, "%s serves MQTT over WebSocket: send a WebSocket upgrade (GET with Upgrade: websocket) offering the subprotocol mqtt", WebSocketPath)
		return
	}
	proto := ""
	for _, p := range websocket.Subprotocols(r) {
		if strings.EqualFold(p, "mqtt") {
			proto = p
			break
		}
	}
	if proto == "" {
		fail(http.StatusBadRequest, dpserr.CodeWebSocketUpgrade, "the WebSocket upgrade offers the subprotocols %q; offer mqtt (Sec-WebSocket-Protocol: mqtt)", websocket.Subprotocols(r))
		return
	}
	if !s.start() {
		fail(http.StatusServiceUnavailable, dpserr.CodeShuttingDown, "the server is shutting down")
		return
	}
	defer s.wg.Done()
	up := websocket.Upgrader{
		HandshakeTimeout: durationOr(s.ConnectTimeout, DefaultConnectTimeout),
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
		// Devices send no Origin; a browser page cannot present device
		// credentials it does not hold.
		CheckOrigin: func(*http.Request) bool { return true },
		// The method and the upgrade headers are checked above; what the
		// upgrader still refuses is a malformed handshake (400), or else a
		// failure of the server's own.
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			if status == http.StatusBadRequest {
				fail(status, dpserr.CodeWebSocketUpgrade, "WebSocket upgrade failed: %v", reason)
				return
			}
			e := dpserr.Internal(reason)
			e.Reason = "WebSocket upgrade failed"
			httpx.WriteError(w, r, s.Log, e)
		},
	}
	ws, err := up.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {proto}})
	if err != nil {
		return
	}
	s.Metrics.Connections.WithLabelValues(TransportWebSocket).Inc()
	// A message holds one packet, or a few small ones.
	ws.SetReadLimit(int64(s.maxPacket()) + 64<<10)
	c := newConn(s, &wsTransport{ws: ws}, TransportWebSocket, time.Now().Add(durationOr(s.ConnectTimeout, DefaultConnectTimeout)))
	if r.TLS != nil {
		c.certs = r.TLS.PeerCertificates
	}
	if !s.track(c) {
		ws.Close()
		return
	}
	defer s.untrack(c)
	// net/http's read and write deadlines outlive the hijack.
	ws.UnderlyingConn().SetDeadline(time.Time{})
	c.serve()
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// Shutdown stops accepting, lets each connection finish the request it is
// handling, closes idle ones, and waits for all of them until ctx ends; then
// it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		// Interrupts a connection blocked reading; one in the middle of
		// a request sees closing before its next read.
		c.t.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.t.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}
