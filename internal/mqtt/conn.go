package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/provisioning"
)

// transport is a connection's byte stream: a *tls.Conn, or a WebSocket
// carrying MQTT in binary messages.
type transport interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	Close() error
	RemoteAddr() net.Addr
}

// conn is one device connection. One goroutine reads, handles and writes,
// so a device's requests are answered in order.
type conn struct {
	s               *Server
	t               transport
	br              *bufio.Reader
	transport       string
	log             *slog.Logger
	connectDeadline time.Time
	certs           []*x509.Certificate

	// From CONNECT.
	user      Username
	password  string
	keepAlive time.Duration // read timeout: 1.5 × the keep-alive; 0 for none

	// idleUntil is when the connection is closed unless a register or
	// operation-status request comes (see Server.IdleTimeout).
	idleUntil time.Time

	subscribed bool
	subQoS     byte
	nextID     uint16
	inflight   map[uint16]struct{}
}

func newConn(s *Server, t transport, transportName string, connectDeadline time.Time) *conn {
	return &conn{
		s:               s,
		t:               t,
		br:              bufio.NewReaderSize(t, 4096),
		transport:       transportName,
		log:             s.Log.With("transport", transportName, "remote", t.RemoteAddr().String()),
		connectDeadline: connectDeadline,
		inflight:        map[uint16]struct{}{},
	}
}

// closeReason ends a connection; refused says the server closed it because
// of what the client did (logged at info and counted), otherwise it is an
// ordinary end (logged at debug).
type closeReason struct {
	text    string
	metric  string // refusal reason label; "" for ordinary ends
	refused bool
}

func ended(format string, args ...any) *closeReason {
	return &closeReason{text: fmt.Sprintf(format, args...)}
}

func refusedBy(metric, format string, args ...any) *closeReason {
	return &closeReason{text: fmt.Sprintf(format, args...), metric: metric, refused: true}
}

func (c *conn) serve() {
	m := c.s.Metrics
	m.Active.WithLabelValues(c.transport).Inc()
	defer m.Active.WithLabelValues(c.transport).Dec()
	start := time.Now()
	r := c.runSafely()
	c.t.Close()
	attrs := []any{"reason", r.text, "duration", time.Since(start).Round(time.Millisecond).String()}
	if r.refused {
		m.Refusals.WithLabelValues(c.transport, r.metric).Inc()
		c.log.Info("mqtt connection refused", attrs...)
		return
	}
	c.log.Debug("mqtt connection closed", attrs...)
}

// runSafely is run with a panic confined to its connection, as net/http
// does for a handler: a bug must not take every device down.
func (c *conn) runSafely() (r *closeReason) {
	defer func() {
		if v := recover(); v != nil {
			c.log.Error("mqtt connection panicked", "panic", v, "stack", string(debug.Stack()))
			r = ended("internal error")
		}
	}()
	return c.run()
}

func (c *conn) run() *closeReason {
	c.t.SetReadDeadline(c.connectDeadline)
	// Refuse at the first byte what cannot be a CONNECT (a TLS client
	// speaking HTTP, say) rather than wait for a body.
	if b, err := c.br.Peek(1); err != nil {
		return c.readFailed(err, true)
	} else if b[0] != typeConnect<<4 {
		return refusedBy("protocol_error", "the first byte %#02x is not a CONNECT packet", b[0])
	}
	p, err := c.read()
	if err != nil {
		return c.readFailed(err, true)
	}
	cp := p.(*Connect)
	if r := c.connect(cp); r != nil {
		return r
	}
	for {
		deadline := c.idleUntil
		if ka := time.Now().Add(c.keepAlive); c.keepAlive > 0 && ka.Before(deadline) {
			deadline = ka
		}
		c.t.SetReadDeadline(deadline)
		if c.s.shuttingDown() {
			return ended("server shutting down")
		}
		p, err := c.read()
		if err != nil {
			return c.readFailed(err, false)
		}
		if r := c.handle(p); r != nil {
			return r
		}
	}
}

func (c *conn) read() (Packet, error) {
	p, err := ReadPacket(c.br, c.s.maxPacket())
	if err == nil {
		c.s.Metrics.Packets.WithLabelValues(c.transport, "in", TypeName(p)).Inc()
	}
	return p, err
}

func (c *conn) readFailed(err error, beforeConnect bool) *closeReason {
	var tl *TooLargeError
	var ne net.Error
	switch {
	case errors.As(err, &tl):
		return refusedBy("packet_too_large", "%v", err)
	case errors.Is(err, ErrMalformed):
		return refusedBy("protocol_error", "%v", err)
	case errors.As(err, &ne) && ne.Timeout():
		switch {
		case c.s.shuttingDown():
			return ended("server shutting down")
		case beforeConnect:
			return refusedBy("connect_timeout", "no CONNECT within %s of connecting", durationOr(c.s.ConnectTimeout, DefaultConnectTimeout))
		case !time.Now().Before(c.idleUntil):
			return refusedBy("idle_timeout", "no register or operation-status request within %s", c.s.idleTimeout())
		}
		return refusedBy("keepalive_timeout", "no packet within 1.5 × the keep-alive (%s)", c.keepAlive)
	case errors.Is(err, io.EOF):
		if beforeConnect {
			return ended("connection closed by the client before CONNECT")
		}
		return ended("connection closed by the client without DISCONNECT")
	}
	return ended("connection lost: %v", err)
}

func (c *conn) write(p Packet) error {
	b := p.Encode(nil)
	c.t.SetWriteDeadline(time.Now().Add(durationOr(c.s.WriteTimeout, DefaultWriteTimeout)))
	if _, err := c.t.Write(b); err != nil {
		return err
	}
	c.s.Metrics.Packets.WithLabelValues(c.transport, "out", TypeName(p)).Inc()
	return nil
}

// connect answers CONNECT: nil when accepted.
func (c *conn) connect(p *Connect) *closeReason {
	refuse := func(code byte, metric, format string, args ...any) *closeReason {
		if err := c.write(&Connack{ReturnCode: code}); err != nil {
			return ended("writing CONNACK: %v", err)
		}
		return refusedBy(metric, "CONNACK %#02x: %s", code, fmt.Sprintf(format, args...))
	}
	if p.ProtocolName != "MQTT" && p.ProtocolName != "MQIsdp" {
		return refusedBy("protocol_error", "CONNECT protocol name %q is not MQTT", p.ProtocolName)
	}
	if p.ProtocolLevel != 4 {
		return refuse(ConnRefusedProtocol, "unsupported_protocol_version", "protocol level %d; DPS speaks MQTT 3.1.1 (level 4)", p.ProtocolLevel)
	}
	c.log = c.log.With("clientId", dps.Truncate(p.ClientID))
	if c.s.shuttingDown() {
		return refuse(ConnRefusedUnavailable, "shutting_down", "the server is shutting down")
	}
	if !p.UsernameFlag {
		return refuse(ConnRefusedBadUsername, "bad_username", "no user name; DPS devices send {idScope}/registrations/{registrationId}/api-version=2019-03-31")
	}
	u, err := ParseUsername(p.Username)
	if err != nil {
		return refuse(ConnRefusedBadUsername, "bad_username", "%v", err)
	}
	if p.ClientID == "" || !strings.EqualFold(p.ClientID, u.RegistrationID) {
		return refuse(ConnRefusedIdentifier, "identifier_rejected", "client ID %q is not the registration ID %q of the user name", dps.Truncate(p.ClientID), dps.Truncate(u.RegistrationID))
	}
	c.user, c.password = u, string(p.Password)
	c.keepAlive = time.Duration(p.KeepAlive) * 1500 * time.Millisecond
	c.idleUntil = time.Now().Add(c.s.idleTimeout())
	if err := c.write(&Connack{}); err != nil {
		return ended("writing CONNACK: %v", err)
	}
	c.log.Debug("mqtt connected", "registrationId", u.RegistrationID, "idScope", u.IDScope,
		"apiVersion", u.APIVersion, "clientVersion", u.ClientVersion, "keepAlive", p.KeepAlive,
		"x509", len(c.certs) > 0, "password", len(p.Password) > 0)
	return nil
}

// handle answers one packet after CONNECT; a non-nil reason closes the
// connection.
func (c *conn) handle(p Packet) *closeReason {
	var err error
	switch p := p.(type) {
	case *Publish:
		return c.publish(p)
	case *Subscribe:
		codes := make([]byte, len(p.Subscriptions))
		for i, sub := range p.Subscriptions {
			if sub.Filter != ResponseFilter {
				codes[i] = SubackFailure
				c.s.Metrics.Refusals.WithLabelValues(c.transport, "subscription_refused").Inc()
				c.log.Info("mqtt subscription refused", "filter", dps.Truncate(sub.Filter), "reason", "devices may subscribe to "+ResponseFilter+" only")
				continue
			}
			codes[i] = min(sub.QoS, 1)
			c.subscribed, c.subQoS = true, codes[i]
		}
		err = c.write(&Suback{PacketID: p.PacketID, ReturnCodes: codes})
	case *Unsubscribe:
		for _, f := range p.Filters {
			if f == ResponseFilter {
				c.subscribed = false
			}
		}
		err = c.write(Unsuback(p.PacketID))
	case *Ack:
		if p.Type != typePuback {
			return refusedBy("protocol_error", "%s: QoS 2 is not supported", strings.ToUpper(TypeName(p)))
		}
		delete(c.inflight, p.PacketID)
	case *Simple:
		switch p.Type {
		case typePingreq:
			err = c.write(Pingresp)
		case typeDisconnect:
			return ended("client disconnected")
		default:
			return refusedBy("protocol_error", "%s is a server-to-client packet", strings.ToUpper(TypeName(p)))
		}
	case *Connect:
		return refusedBy("protocol_error", "a second CONNECT")
	default:
		return refusedBy("protocol_error", "%s is a server-to-client packet", strings.ToUpper(TypeName(p)))
	}
	if err != nil {
		return ended("write failed: %v", err)
	}
	return nil
}

func (c *conn) publish(p *Publish) *closeReason {
	if p.QoS == 2 {
		return refusedBy("protocol_error", "PUBLISH at QoS 2 to %q: DPS supports QoS 0 and 1", dps.Truncate(p.Topic))
	}
	req, err := ParseTopic(p.Topic)
	switch {
	case errors.Is(err, ErrTopicNotAllowed):
		return refusedBy("topic_not_allowed", "PUBLISH to %q: devices publish only to %s?$rid={rid} and %s?$rid={rid}&operationId={operationId}", dps.Truncate(p.Topic), registerTopic, pollTopic)
	case err != nil:
		return refusedBy("no_rid", "PUBLISH to %q: %v; the answer goes to $dps/registrations/res/{status}/?$rid={rid}", dps.Truncate(p.Topic), err)
	case len(p.Payload) > dps.MaxMessageBytes:
		return refusedBy("packet_too_large", "PUBLISH to %q with a payload of %d bytes exceeds the %d KB limit", dps.Truncate(p.Topic), len(p.Payload), dps.MaxMessageBytes>>10)
	}
	if p.QoS == 1 {
		if err := c.write(Puback(p.PacketID)); err != nil {
			return ended("write failed: %v", err)
		}
	}
	status, retryAfter, body, drop := c.request(req, p.Payload)
	if drop {
		return ended("fault injected: the connection is dropped without an answer")
	}
	// A device told to come back in retryAfter seconds gets them on top.
	c.idleUntil = time.Now().Add(c.s.idleTimeout() + time.Duration(retryAfter)*time.Second)
	c.s.Metrics.Requests.WithLabelValues(c.transport, req.Kind.String(), strconv.Itoa(status)).Inc()
	topic := ResponseTopic(status, req.RID, retryAfter)
	c.log.Debug("mqtt request", "request", req.Kind.String(), "rid", req.RID, "operationId", req.OperationID,
		"payloadBytes", len(p.Payload), "status", status, "subscribed", c.subscribed)
	if !c.subscribed {
		c.log.Debug("mqtt response not delivered: the device has not subscribed to "+ResponseFilter, "topic", topic)
		return nil
	}
	resp := &Publish{QoS: c.subQoS, Topic: topic, Payload: body}
	if resp.QoS == 1 {
		if len(c.inflight) >= maxInflight {
			return refusedBy("unacknowledged", "%d responses await a PUBACK", len(c.inflight))
		}
		for {
			c.nextID++
			if _, used := c.inflight[c.nextID]; c.nextID != 0 && !used {
				break
			}
		}
		resp.PacketID = c.nextID
		c.inflight[resp.PacketID] = struct{}{}
	}
	if err := c.write(resp); err != nil {
		return ended("write failed: %v", err)
	}
	return nil
}

// request calls the pipeline and returns the status, retry-after and JSON
// body to answer with: the pipeline's answer, or the DPS error JSON of its
// refusal, logged with the tracking ID the body carries; or drop, when an
// injected fault asks to close the connection without an answer.
func (c *conn) request(tr TopicRequest, payload []byte) (status, retryAfter int, body []byte, drop bool) {
	trackingID := dps.NewUUID()
	ctx, cancel := context.WithTimeout(c.s.ctx, durationOr(c.s.RequestTimeout, DefaultRequestTimeout))
	defer cancel()
	req := provisioning.Request{
		Transport:      c.transport,
		TrackingID:     trackingID,
		IDScope:        c.user.IDScope,
		RegistrationID: c.user.RegistrationID,
		APIVersion:     c.user.APIVersion,
		Credentials:    attest.Credentials{Certificates: c.certs, SAS: c.password},
		Peer:           c.t.RemoteAddr().String(),
	}
	var ans *provisioning.Answer
	var err error
	switch tr.Kind {
	case Register:
		if req.Body, err = provisioning.ParseBody(payload); err == nil {
			ans, err = c.s.Provisioner.Register(ctx, req)
		} else {
			err = c.s.Provisioner.Refused(&req, provisioning.OpRegister, err)
		}
	case OperationStatus:
		if tr.OperationID == "" {
			err = c.s.Provisioner.Refused(&req, provisioning.OpPoll, dpserr.BadRequest("the operation-status topic has no operationId: publish to %s?$rid={rid}&operationId={operationId} with the operationId of the register answer", pollTopic))
		} else {
			ans, err = c.s.Provisioner.OperationStatus(ctx, req, tr.OperationID)
		}
	}
	if err == nil && (ans == nil || ans.Body == nil) {
		err = dpserr.Internal(errors.New("the pipeline returned no answer"))
	}
	if errors.Is(err, limits.ErrDrop) {
		return 0, 0, nil, true
	}
	if err != nil {
		e := dpserr.As(err)
		httpx.LogError(c.log, context.Background(), e, trackingID,
			slog.String("request", tr.Kind.String()), slog.String("registrationId", c.user.RegistrationID), slog.String("rid", tr.RID))
		return e.Status, e.RetryAfter, marshal(dpserr.Details(e, trackingID, time.Now())), false
	}
	return ans.Status, ans.RetryAfter, marshal(ans.Body), false
}

// marshal encodes v as the device APIs do (no HTML escaping: messages quote
// SAS syntax and topics).
func marshal(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return []byte(`{"errorCode":500001,"message":"response encoding failed"}`)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
