package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/client"
	clientmqtt "github.com/dpsd/dpsd/client/mqtt"
	mqttpkt "github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/wait"
)

// mqttTarget registers over MQTT 3.1.1 over TLS with a lean client of the
// Azure SDKs' wire behaviour — CONNECT with the registration ID as client ID
// (and the SAS token as password for a symmetric key), SUBSCRIBE to
// $dps/registrations/res/#, PUBLISH the register request at QoS 1, poll while
// assigning — waiting for each answer as the SDKs do, and nothing else: no
// retries, no background goroutines, so what it measures is the server.
// An MQTT connection carries one device (its client ID).
type mqttTarget struct {
	endpoint, host, idScope string
	roots                   *x509.CertPool
	fleet                   *fleet
	keepAlive               bool
}

func (t *mqttTarget) operations() (string, string) {
	if t.keepAlive {
		return "PINGREQ/PINGRESP, kept-alive connection", "re-register, kept-alive connection (one device each)"
	}
	return "new TLS connection + CONNECT/CONNACK", "new TLS connection + CONNECT, SUBSCRIBE, register"
}

func (t *mqttTarget) distinct(p plan) int {
	if t.keepAlive {
		return p.concurrency
	}
	return t.fleet.distinct(p)
}

func (t *mqttTarget) open(ctx context.Context, w int, timeout time.Duration) (conn, error) {
	if !t.keepAlive {
		return &mqttNew{t: t}, nil
	}
	d := t.fleet.device(w)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := t.dial(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := c.subscribe(); err != nil {
		c.close()
		return nil, err
	}
	// The device's first registration: the workload then measures
	// re-registrations on the connection.
	if err := c.register(ctx, t.idScope, d.id); err != nil {
		c.close()
		return nil, fmt.Errorf("registering device %s first: %w", d.id, err)
	}
	return &mqttKept{c: c, t: t, dev: d}, nil
}

// mqttNew connects anew for every operation.
type mqttNew struct {
	t *mqttTarget
}

func (m *mqttNew) baseline(ctx context.Context, i int) error {
	c, err := m.t.dial(ctx, m.t.fleet.device(i))
	if err != nil {
		return err
	}
	c.close()
	return nil
}

func (m *mqttNew) register(ctx context.Context, i int) error {
	d := m.t.fleet.device(i)
	c, err := m.t.dial(ctx, d)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.subscribe(); err != nil {
		return err
	}
	return c.register(ctx, m.t.idScope, d.id)
}

func (m *mqttNew) close() {}

// mqttKept is one device's connection.
type mqttKept struct {
	c   *mqttConn
	t   *mqttTarget
	dev device
}

func (m *mqttKept) baseline(ctx context.Context, _ int) error {
	m.c.deadline(ctx)
	return m.c.ping()
}

func (m *mqttKept) register(ctx context.Context, _ int) error {
	return m.c.register(ctx, m.t.idScope, m.dev.id)
}

func (m *mqttKept) close() { m.c.close() }

// mqttConn is one MQTT connection of the lean client.
type mqttConn struct {
	nc       net.Conn
	br       *bufio.Reader
	packetID uint16
	rid      int
}

// maxPacket bounds what the client reads: answers are a few KB.
const maxPacket = 1 << 20

// dial connects (TLS, CONNECT) as device d.
func (t *mqttTarget) dial(ctx context.Context, d device) (*mqttConn, error) {
	tc := &tls.Config{RootCAs: t.roots, ServerName: t.host}
	if d.cert != nil {
		tc.Certificates = []tls.Certificate{*d.cert}
	}
	nc, err := (&tls.Dialer{Config: tc}).DialContext(ctx, "tcp", t.endpoint)
	if err != nil {
		return nil, &transportError{err}
	}
	c := &mqttConn{nc: nc, br: bufio.NewReader(nc)}
	c.deadline(ctx)
	cp := &mqttpkt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, KeepAlive: 300, ClientID: d.id,
		UsernameFlag: true, Username: clientmqtt.Username(t.idScope, d.id, client.DefaultAPIVersion, "dpsd-load")}
	if d.key != nil {
		cp.PasswordFlag, cp.Password = true, []byte(client.SASToken(t.idScope, d.id, d.key, time.Now().Add(time.Hour)))
	}
	if err := c.write(cp); err != nil {
		nc.Close()
		return nil, err
	}
	p, err := c.read()
	if err != nil {
		nc.Close()
		return nil, err
	}
	ack, ok := p.(*mqttpkt.Connack)
	switch {
	case !ok:
		nc.Close()
		return nil, fmt.Errorf("the server answered CONNECT with %s", mqttpkt.TypeName(p))
	case ack.ReturnCode != mqttpkt.ConnAccepted:
		nc.Close()
		return nil, &clientmqtt.ConnectError{ReturnCode: ack.ReturnCode, Err: errors.New("CONNECT refused")}
	}
	return c, nil
}

// deadline bounds the connection's reads and writes by ctx's deadline.
func (c *mqttConn) deadline(ctx context.Context) {
	dl, _ := ctx.Deadline()
	c.nc.SetDeadline(dl)
}

func (c *mqttConn) write(p mqttpkt.Packet) error {
	if _, err := c.nc.Write(p.Encode(nil)); err != nil {
		return &transportError{err}
	}
	return nil
}

func (c *mqttConn) read() (mqttpkt.Packet, error) {
	p, err := mqttpkt.ReadPacket(c.br, maxPacket)
	if err != nil {
		return nil, &transportError{err}
	}
	return p, nil
}

func (c *mqttConn) nextPacketID() uint16 {
	c.packetID++
	if c.packetID == 0 {
		c.packetID = 1
	}
	return c.packetID
}

func (c *mqttConn) subscribe() error {
	id := c.nextPacketID()
	if err := c.write(&mqttpkt.Subscribe{PacketID: id, Subscriptions: []mqttpkt.Subscription{{Filter: mqttpkt.ResponseFilter, QoS: 1}}}); err != nil {
		return err
	}
	p, err := c.read()
	if err != nil {
		return err
	}
	if s, ok := p.(*mqttpkt.Suback); !ok || s.PacketID != id || len(s.ReturnCodes) != 1 || s.ReturnCodes[0] == mqttpkt.SubackFailure {
		return fmt.Errorf("SUBSCRIBE to %s was not granted (answer: %v)", mqttpkt.ResponseFilter, p)
	}
	return nil
}

func (c *mqttConn) ping() error {
	if err := c.write(mqttpkt.Pingreq); err != nil {
		return err
	}
	p, err := c.read()
	if err != nil {
		return err
	}
	if s, ok := p.(*mqttpkt.Simple); !ok || s.Type != mqttpkt.Pingresp.Type {
		return fmt.Errorf("the server answered PINGREQ with %s", mqttpkt.TypeName(p))
	}
	return nil
}

func (c *mqttConn) close() {
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.write(mqttpkt.Disconnect)
	c.nc.Close()
}

// register publishes the register request and polls the operation until it
// ends: nil when assigned, a *client.StatusError when failed or disabled, a
// *client.Error when the server answers an error status.
func (c *mqttConn) register(ctx context.Context, idScope, registrationID string) error {
	c.deadline(ctx)
	body, _ := json.Marshal(map[string]string{"registrationId": registrationID})
	topic := "$dps/registrations/PUT/iotdps-register/?$rid="
	for {
		c.rid++
		rid := strconv.Itoa(c.rid)
		if err := c.write(&mqttpkt.Publish{QoS: 1, PacketID: c.nextPacketID(), Topic: topic + rid, Payload: body}); err != nil {
			return err
		}
		status, retryAfter, answer, err := c.await(rid)
		if err != nil {
			return err
		}
		if status >= 300 {
			e := &client.Error{StatusCode: status, RetryAfter: retryAfter}
			_ = json.Unmarshal(answer, e)
			return e
		}
		var op client.OperationStatus
		if err := json.Unmarshal(answer, &op); err != nil {
			return fmt.Errorf("decoding the answer: %w", err)
		}
		switch {
		case op.Status == "assigning" || op.Status == "unassigned":
			if op.OperationID == "" {
				return errors.New("the service answered assigning without an operationId")
			}
			if retryAfter == 0 {
				retryAfter = 2 * time.Second
			}
			if err := wait.Sleep(ctx, retryAfter); err != nil {
				return err
			}
			topic, body = "$dps/registrations/GET/iotdps-get-operationstatus/?operationId="+op.OperationID+"&$rid=", []byte(" ")
			continue
		case op.RegistrationState == nil:
			return fmt.Errorf("the service answered status %q without a registrationState", op.Status)
		case op.Status != "assigned":
			return &client.StatusError{State: op.RegistrationState}
		}
		return nil
	}
}

// await reads until the answer to request rid, acknowledging what the
// server publishes at QoS 1.
func (c *mqttConn) await(rid string) (status int, retryAfter time.Duration, body []byte, err error) {
	for {
		p, err := c.read()
		if err != nil {
			return 0, 0, nil, err
		}
		pub, ok := p.(*mqttpkt.Publish)
		if !ok {
			continue // the PUBACK of the request
		}
		if pub.QoS == 1 {
			if err := c.write(mqttpkt.Puback(pub.PacketID)); err != nil {
				return 0, 0, nil, err
			}
		}
		status, gotRID, retryAfter, ok := parseResponseTopic(pub.Topic)
		if !ok {
			return 0, 0, nil, fmt.Errorf("the server published on %q", pub.Topic)
		}
		if gotRID == rid {
			return status, retryAfter, pub.Payload, nil
		}
	}
}

// parseResponseTopic reads $dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}].
func parseResponseTopic(topic string) (status int, rid string, retryAfter time.Duration, ok bool) {
	rest, ok := strings.CutPrefix(topic, "$dps/registrations/res/")
	if !ok {
		return 0, "", 0, false
	}
	s, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return 0, "", 0, false
	}
	status, err := strconv.Atoi(s)
	if err != nil {
		return 0, "", 0, false
	}
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "$rid":
			rid = v
		case strings.EqualFold(k, "retry-after"):
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				retryAfter = time.Duration(min(n, 300)) * time.Second
			}
		}
	}
	return status, rid, retryAfter, true
}
