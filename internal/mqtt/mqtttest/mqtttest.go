// Package mqtttest is a raw MQTT 3.1.1 device for tests: it sends exactly
// the packets a test builds (including malformed ones) over TLS or
// WebSocket, and reads exactly what the server answers, with deadlines, so a
// test can assert the wire: topics, QoS, packet identifiers, CONNACK codes,
// and when the server closes the connection.
package mqtttest

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dpsd/dpsd/internal/mqtt"
)

// Timeout bounds every read a helper does: answers take milliseconds.
const Timeout = 10 * time.Second

// Conn is one device connection.
type Conn struct {
	t      testing.TB
	raw    net.Conn
	rw     io.ReadWriter
	br     *bufio.Reader
	nextID uint16
	mu     sync.Mutex
}

// DialTLS connects to an MQTT-over-TLS listener.
func DialTLS(t testing.TB, addr string, cfg *tls.Config) *Conn {
	t.Helper()
	c, err := TryDialTLS(t, addr, cfg)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	return c
}

// TryDialTLS is DialTLS returning the error (a refused handshake).
func TryDialTLS(t testing.TB, addr string, cfg *tls.Config) (*Conn, error) {
	d := &net.Dialer{Timeout: Timeout}
	tc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { tc.Close() })
	return &Conn{t: t, raw: tc, rw: tc, br: bufio.NewReader(tc)}, nil
}

// DialTCP opens a plain TCP connection (no TLS) to addr, for tests of what
// the server does with bytes that are not TLS.
func DialTCP(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, Timeout)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// DialWebSocket connects to MQTT over WebSocket at url (wss://host/$iothub/websocket)
// offering subprotocol.
func DialWebSocket(t testing.TB, url string, cfg *tls.Config, subprotocol string) *Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: Timeout, Subprotocols: []string{subprotocol}}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = fmt.Sprintf(" (HTTP %d %s)", resp.StatusCode, b)
		}
		t.Fatalf("WebSocket dial %s: %v%s", url, err, body)
	}
	if got := resp.Header.Get("Sec-Websocket-Protocol"); got != subprotocol {
		t.Errorf("WebSocket subprotocol answered %q, want %q (echoed as offered)", got, subprotocol)
	}
	rw := mqtt.WebSocketStream(ws)
	c := &Conn{t: t, raw: ws.NetConn(), rw: rw, br: bufio.NewReader(rw)}
	t.Cleanup(func() { ws.Close() })
	return c
}

// WebSocketResponse dials url offering the given subprotocols and returns
// the HTTP answer of a refused upgrade (nil if the upgrade succeeded).
func WebSocketResponse(t testing.TB, url string, cfg *tls.Config, subprotocols ...string) *http.Response {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: Timeout, Subprotocols: subprotocols}
	ws, resp, err := d.Dial(url, nil)
	if err == nil {
		ws.Close()
		return nil
	}
	if resp == nil {
		t.Fatalf("WebSocket dial %s: %v", url, err)
	}
	return resp
}

// Send writes one packet.
func (c *Conn) Send(p mqtt.Packet) {
	c.t.Helper()
	if err := c.TrySend(p.Encode(nil)); err != nil {
		c.t.Fatalf("sending %s: %v", mqtt.TypeName(p), err)
	}
}

// TrySend writes raw bytes and returns the error (the server may have closed
// the connection).
func (c *Conn) TrySend(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw.SetWriteDeadline(time.Now().Add(Timeout))
	_, err := c.rw.Write(b)
	return err
}

// Read reads the next packet within d.
func (c *Conn) Read(d time.Duration) (mqtt.Packet, error) {
	c.raw.SetReadDeadline(time.Now().Add(d))
	return mqtt.ReadPacket(c.br, 1<<20)
}

// Next reads the next packet and fails the test on an error.
func (c *Conn) Next() mqtt.Packet {
	c.t.Helper()
	p, err := c.Read(Timeout)
	if err != nil {
		c.t.Fatalf("reading a packet: %v", err)
	}
	return p
}

// ExpectClosed asserts that the server closes the connection within d
// without sending another packet.
func (c *Conn) ExpectClosed(d time.Duration) {
	c.t.Helper()
	p, err := c.Read(d)
	if err == nil {
		c.t.Fatalf("got %s, want the server to close the connection", describe(p))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("the server did not close the connection within %s", d)
	}
}

func describe(p mqtt.Packet) string {
	if pub, ok := p.(*mqtt.Publish); ok {
		return fmt.Sprintf("PUBLISH %q %s", pub.Topic, pub.Payload)
	}
	return fmt.Sprintf("%s %+v", strings.ToUpper(mqtt.TypeName(p)), p)
}

// Username is the CONNECT user name every SDK sends.
func Username(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID + "/api-version=2019-03-31&ClientVersion=dpsd-mqtttest%2F1.0"
}

// Connect sends CONNECT and returns the CONNACK return code. An empty
// password sends none.
func (c *Conn) Connect(clientID, username, password string) byte {
	c.t.Helper()
	p := &mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, KeepAlive: 60,
		ClientID: clientID, UsernameFlag: username != "", Username: username}
	if password != "" {
		p.PasswordFlag, p.Password = true, []byte(password)
	}
	return c.ConnectWith(p)
}

// ConnectWith sends p and returns the CONNACK return code.
func (c *Conn) ConnectWith(p *mqtt.Connect) byte {
	c.t.Helper()
	c.Send(p)
	ack, ok := c.Next().(*mqtt.Connack)
	if !ok {
		c.t.Fatalf("the answer to CONNECT is not CONNACK")
	}
	if ack.SessionPresent {
		c.t.Errorf("CONNACK session present: sessions are always clean")
	}
	return ack.ReturnCode
}

// MustConnect connects a device and fails unless CONNACK accepts it.
func (c *Conn) MustConnect(idScope, registrationID, password string) {
	c.t.Helper()
	if rc := c.Connect(registrationID, Username(idScope, registrationID), password); rc != 0 {
		c.t.Fatalf("CONNACK %#x, want 0", rc)
	}
}

func (c *Conn) id() uint16 {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return c.nextID
}

// Subscribe subscribes to filters at qos and returns the SUBACK codes.
func (c *Conn) Subscribe(qos byte, filters ...string) []byte {
	c.t.Helper()
	s := &mqtt.Subscribe{PacketID: c.id()}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, mqtt.Subscription{Filter: f, QoS: qos})
	}
	c.Send(s)
	ack, ok := c.Next().(*mqtt.Suback)
	if !ok || ack.PacketID != s.PacketID {
		c.t.Fatalf("the answer to SUBSCRIBE is %+v, want SUBACK %d", ack, s.PacketID)
	}
	return ack.ReturnCodes
}

// Publish sends a QoS 1 PUBLISH and checks its PUBACK.
func (c *Conn) Publish(topic string, payload []byte) {
	c.t.Helper()
	id := c.id()
	c.Send(&mqtt.Publish{QoS: 1, PacketID: id, Topic: topic, Payload: payload})
	ack, ok := c.Next().(*mqtt.Ack)
	if !ok || ack.PacketID != id {
		c.t.Fatalf("the answer to PUBLISH %q is %+v, want PUBACK %d", topic, ack, id)
	}
}

// Response reads the next PUBLISH (a response), PUBACKs it if QoS 1, and
// returns it.
func (c *Conn) Response() *mqtt.Publish {
	c.t.Helper()
	p := c.Next()
	pub, ok := p.(*mqtt.Publish)
	if !ok {
		c.t.Fatalf("got %s, want a response PUBLISH", describe(p))
	}
	if pub.QoS == 1 {
		c.Send(mqtt.Puback(pub.PacketID))
	}
	return pub
}

// Answer is a parsed response.
type Answer struct {
	Topic      string
	Status     int
	RID        string
	RetryAfter int // 0 when absent
	QoS        byte
	Body       map[string]any
	Raw        []byte
}

// ParseResponse parses a response topic the way the Node SDK does
// (^\$dps\/registrations\/res\/(.*)\/\?(.*)$, then the query) and checks the
// shape every SDK needs: $rid first, the body JSON.
func ParseResponse(t testing.TB, p *mqtt.Publish) *Answer {
	t.Helper()
	const prefix = "$dps/registrations/res/"
	rest, ok := strings.CutPrefix(p.Topic, prefix)
	status, query, ok2 := strings.Cut(rest, "/?")
	if !ok || !ok2 {
		t.Fatalf("response topic %q is not %s{status}/?...", p.Topic, prefix)
	}
	a := &Answer{Topic: p.Topic, QoS: p.QoS, Raw: p.Payload}
	var err error
	if a.Status, err = strconv.Atoi(status); err != nil {
		t.Fatalf("response topic %q: status %q", p.Topic, status)
	}
	if !strings.HasPrefix(query, "$rid=") {
		t.Errorf("response topic %q: $rid is not the first property (the C# SDK's regex needs it there)", p.Topic)
	}
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			a.RID = v
		case "retry-after":
			if a.RetryAfter, err = strconv.Atoi(v); err != nil {
				t.Errorf("response topic %q: retry-after %q is not an integer", p.Topic, v)
			}
		default:
			t.Errorf("response topic %q: unexpected property %q", p.Topic, k)
		}
	}
	if len(strings.Split(p.Topic, "$")) != 3 {
		t.Errorf("response topic %q: Python's split on $ does not give 3 parts", p.Topic)
	}
	if err := json.Unmarshal(p.Payload, &a.Body); err != nil {
		t.Errorf("response payload is not a JSON object (the Node SDK parses it unguarded): %v: %q", err, p.Payload)
	}
	return a
}

// Request publishes a request at QoS 1 and returns the parsed response,
// checking that it echoes rid.
func (c *Conn) Request(topic, rid string, payload []byte) *Answer {
	c.t.Helper()
	c.Publish(topic, payload)
	a := ParseResponse(c.t, c.Response())
	if a.RID != rid {
		c.t.Errorf("response $rid %q, want %q echoed", a.RID, rid)
	}
	return a
}

// RegisterTopic and PollTopic are the request topics.
func RegisterTopic(rid string) string { return "$dps/registrations/PUT/iotdps-register/?$rid=" + rid }
func PollTopic(rid, operationID string) string {
	return "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=" + rid + "&operationId=" + operationID
}

// Register sends a register request with payload.
func (c *Conn) Register(rid string, payload []byte) *Answer {
	c.t.Helper()
	return c.Request(RegisterTopic(rid), rid, payload)
}

// Poll polls operationID with the Node/Python payload " ".
func (c *Conn) Poll(rid, operationID string) *Answer {
	c.t.Helper()
	return c.Request(PollTopic(rid, operationID), rid, []byte(" "))
}

// Disconnect sends DISCONNECT and closes.
func (c *Conn) Disconnect() {
	c.TrySend(mqtt.Disconnect.Encode(nil))
	c.raw.Close()
}

// Close closes the connection without DISCONNECT.
func (c *Conn) Close() { c.raw.Close() }

// String returns a string field of the body ("" if absent).
func (a *Answer) String(path ...string) string {
	var v any = a.Body
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[k]
	}
	s, _ := v.(string)
	return s
}

// Number returns a numeric field of the body (0 if absent).
func (a *Answer) Number(path ...string) int {
	var v any = a.Body
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return 0
		}
		v = m[k]
	}
	f, _ := v.(float64)
	return int(f)
}
