package mqtt_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/mqtt"
	"github.com/dpsd/dpsd/internal/mqtt/mqtttest"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/testutil"
)

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

const sasPassword = "SharedAccessSignature sr=s/registrations/dev&sig=x&se=1&skn=registration"

// TestExchange is the exchange the Embedded C SDK documents, on both transports: the exact
// response topic, $rid echoed verbatim, QoS 1 with a packet identifier, the
// addressing and credentials handed to the pipeline.
func TestExchange(t *testing.T) {
	for _, ws := range []bool{false, true} {
		name := map[bool]string{false: "mqtt", true: "mqtt-ws"}[ws]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, options{fake: true})
			h.Fake.set(func(req provisioning.Request) (*provisioning.Answer, error) {
				return &provisioning.Answer{Status: 202, RetryAfter: 3, Body: &dps.RegistrationOperationStatus{OperationID: "4.d0a671905ea5b2c8.e7173b7b", Status: dps.StatusAssigning}}, nil
			}, nil)
			c := h.device(t, ws, "dev-01", provtest.Cred{SAS: sasPassword})
			for _, rid := range []string{"1", "42", "6f1e1c3a-4b6f-4c1b-9d1e-0c6f5a0f3b2a", "a%20b"} {
				a := c.Register(rid, []byte(`{"registrationId":"dev-01"}`))
				if want := "$dps/registrations/res/202/?$rid=" + rid + "&retry-after=3"; a.Topic != want {
					t.Errorf("topic %q, want %q", a.Topic, want)
				}
				if a.QoS != 1 {
					t.Errorf("response QoS %d, want 1", a.QoS)
				}
				if a.String("operationId") != "4.d0a671905ea5b2c8.e7173b7b" || a.String("status") != "assigning" {
					t.Errorf("body %s", a.Raw)
				}
			}
			call := h.Fake.last(t)
			if call.Req.Transport != name || call.Req.IDScope != h.Scope || call.Req.RegistrationID != "dev-01" ||
				call.Req.Credentials.SAS != sasPassword || call.Req.TrackingID == "" || call.Req.Body == nil || call.Req.Body.RegistrationID != "dev-01" {
				t.Errorf("request %+v", call.Req)
			}
			a := c.Poll("7", "4.d0a671905ea5b2c8.e7173b7b")
			if a.Topic != "$dps/registrations/res/200/?$rid=7" || a.String("status") != "assigned" || a.String("registrationState", "assignedHub") != hub1 {
				t.Errorf("poll answer %s %s", a.Topic, a.Raw)
			}
			if call := h.Fake.last(t); call.OperationID != "4.d0a671905ea5b2c8.e7173b7b" {
				t.Errorf("polled operation %q", call.OperationID)
			}
			// Packet identifiers of the responses are distinct and not 0.
			c.Publish(mqtttest.RegisterTopic("x"), nil)
			p1 := c.Response()
			c.Publish(mqtttest.RegisterTopic("y"), nil)
			p2 := c.Response()
			if p1.PacketID == 0 || p1.PacketID == p2.PacketID {
				t.Errorf("response packet ids %d, %d", p1.PacketID, p2.PacketID)
			}
			c.Disconnect()
			if got := value(h.Metrics.Requests.WithLabelValues(name, "register", "202")); got != 6 {
				t.Errorf("dpsd_mqtt_requests_total{register,202} = %v, want 6", got)
			}
			if got := value(h.Metrics.Connections.WithLabelValues(name)); got != 1 {
				t.Errorf("dpsd_mqtt_connections_total = %v, want 1", got)
			}
		})
	}
}

// TestPayloadVariants: every SDK's register and poll payloads (docs/protocol.md, "MQTT").
func TestPayloadVariants(t *testing.T) {
	h := newHarness(t, options{fake: true})
	c := h.device(t, false, "dev", provtest.Cred{SAS: sasPassword})
	tests := map[string]struct {
		payload     []byte
		wantBody    bool
		wantPayload string
	}{
		"c#: empty":                           {nil, false, ""},
		"single space":                        {[]byte(" "), false, ""},
		"null":                                {[]byte("null"), false, ""},
		"c#: payload without registration id": {[]byte(`{"payload":{"modelId":"dtmi:x;1"}}`), true, `{"modelId":"dtmi:x;1"}`},
		"python: payload null":                {[]byte(`{"payload": null, "registrationId": "dev"}`), true, ""},
		"node":                                {[]byte(`{"registrationId":"dev","payload":{"a":1}}`), true, `{"a":1}`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			a := c.Register("r", tt.payload)
			if a.Status != 202 {
				t.Fatalf("status %d: %s", a.Status, a.Raw)
			}
			body := h.Fake.last(t).Req.Body
			if (body != nil) != tt.wantBody {
				t.Fatalf("body %+v, want present=%v", body, tt.wantBody)
			}
			if body != nil && string(body.Payload) != tt.wantPayload {
				t.Errorf("payload %s, want %s", body.Payload, tt.wantPayload)
			}
		})
	}
	t.Run("malformed register payload is a 400 answer", func(t *testing.T) {
		n := h.Fake.count()
		a := c.Register("bad", []byte(`{"registrationId":`))
		if a.Status != 400 || a.Number("errorCode") != dpserr.CodeBadRequest || a.String("trackingId") == "" {
			t.Errorf("answer %s %s", a.Topic, a.Raw)
		}
		if h.Fake.count() != n {
			t.Errorf("a malformed payload reached the provisioner")
		}
	})
	t.Run("a payload that is not UTF-8 is a 400 answer", func(t *testing.T) {
		n := h.Fake.count()
		a := c.Register("latin1", []byte("{\"registrationId\":\"dev\",\"payload\":{\"site\":\"M\xfcnchen\"}}"))
		if a.Status != 400 || a.Number("errorCode") != dpserr.CodeBadRequest || !strings.Contains(a.String("message"), "not UTF-8") {
			t.Errorf("answer %s %s", a.Topic, a.Raw)
		}
		if h.Fake.count() != n {
			t.Errorf("a payload that is not UTF-8 reached the provisioner")
		}
	})
	t.Run("poll payloads are ignored", func(t *testing.T) {
		for _, p := range [][]byte{nil, []byte(" "), []byte("null"), []byte(`{"registrationId":"dev"}`)} {
			a := c.Request(mqtttest.PollTopic("p", "op-1"), "p", p)
			if a.Status != 200 {
				t.Errorf("poll with %q: %d %s", p, a.Status, a.Raw)
			}
		}
	})
	t.Run("poll without operationId is a 400 answer", func(t *testing.T) {
		a := c.Request("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=p2", "p2", []byte(" "))
		if a.Status != 400 || !strings.Contains(a.String("message"), "operationId") {
			t.Errorf("answer %s %s", a.Topic, a.Raw)
		}
	})
	t.Run("exactly 96 KB is accepted", func(t *testing.T) {
		pad := dps.MaxMessageBytes - len(`{"payload":""}`)
		p := []byte(`{"payload":"` + strings.Repeat("a", pad) + `"}`)
		if len(p) != dps.MaxMessageBytes {
			t.Fatal(len(p))
		}
		if a := c.Register("big", p); a.Status != 202 {
			t.Errorf("status %d", a.Status)
		}
	})
}

// TestErrorAnswers: refusals from the pipeline are answered on the response
// topic with the DPS error JSON, the tracking ID of the log line, and
// retry-after for 429 and 503.
func TestErrorAnswers(t *testing.T) {
	h := newHarness(t, options{fake: true})
	c := h.device(t, false, "dev", provtest.Cred{})
	tests := map[string]struct {
		err        error
		status     int
		code       int
		retryAfter int
	}{
		"401": {dpserr.Unauthorized("certificate CN \"x\" does not match registration ID \"dev\""), 401, 401002, 0},
		"404": {dpserr.NotFound(dpserr.CodeOperationNotFound, "operation not found"), 404, 404203, 0},
		"429": {&dpserr.Error{Status: 429, Code: dpserr.CodeThrottled, Message: "throttled", RetryAfter: 10}, 429, 429001, 10},
		"503": {dpserr.Unavailable(errors.New("db down")), 503, 503001, 5},
		"500": {errors.New("boom"), 500, 500001, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			h.Fake.set(func(provisioning.Request) (*provisioning.Answer, error) { return nil, tt.err }, nil)
			a := c.Register("e-"+name, nil)
			want := mqtt.ResponseTopic(tt.status, "e-"+name, tt.retryAfter)
			if a.Topic != want || a.RetryAfter != tt.retryAfter {
				t.Errorf("topic %q, want %q", a.Topic, want)
			}
			if a.Number("errorCode") != tt.code || a.String("message") == "" || a.String("timestampUtc") == "" {
				t.Errorf("body %s", a.Raw)
			}
			id := a.String("trackingId")
			if id == "" || !h.logContains("trackingId="+id) {
				t.Errorf("trackingId %q is not in the log", id)
			}
			if name == "500" && strings.Contains(string(a.Raw), "boom") {
				t.Errorf("an internal error leaks its cause: %s", a.Raw)
			}
		})
	}
}

// TestConnack: what CONNACK refuses, and with which code.
func TestConnack(t *testing.T) {
	h := newHarness(t, options{fake: true})
	user := mqtttest.Username(h.Scope, "dev-01")
	tests := map[string]struct {
		p    *mqtt.Connect
		want byte
	}{
		"ok":                        {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: user}, 0},
		"ok/client id case differs": {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "DEV-01", UsernameFlag: true, Username: user}, 0},
		"ok/python clean session 0 and a will": {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: user,
			WillFlag: true, WillTopic: "w", WillMessage: []byte("x")}, 0},
		"ok/no ClientVersion":                       {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: h.Scope + "/registrations/dev-01/api-version=2019-03-31"}, 0},
		"ok/unknown id scope (refused at register)": {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: mqtttest.Username("0ne99999999", "dev-01")}, 0},
		"0x01/mqtt 3.1":                             {&mqtt.Connect{ProtocolName: "MQIsdp", ProtocolLevel: 3, ClientID: "dev-01", UsernameFlag: true, Username: user}, 1},
		"0x01/mqtt 5":                               {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 5, ClientID: "dev-01"}, 1},
		"0x02/empty client id":                      {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, UsernameFlag: true, Username: user}, 2},
		"0x02/client id differs":                    {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-02", UsernameFlag: true, Username: user}, 2},
		"0x04/no user name":                         {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01"}, 4},
		"0x04/iot hub user name":                    {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: "hub.azure-devices.net/dev-01/?api-version=2021-04-12"}, 4},
		"0x04/no api-version":                       {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: h.Scope + "/registrations/dev-01/"}, 4},
		"0x04/no registration id":                   {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: true, Username: h.Scope + "/registrations"}, 4},
		"0x04/sas but no user name":                 {&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev-01", UsernameFlag: false}, 4},
	}
	t.Run("codes", func(t *testing.T) {
		for name, tt := range tests {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				c := h.dial(t, nil)
				if rc := c.ConnectWith(tt.p); rc != tt.want {
					t.Fatalf("CONNACK %#x, want %#x", rc, tt.want)
				}
				if tt.want != 0 {
					c.ExpectClosed(mqtttest.Timeout)
					return
				}
				c.Send(mqtt.Pingreq)
				if p := c.Next(); mqtt.TypeName(p) != "pingresp" {
					t.Errorf("PINGREQ answered with %s", mqtt.TypeName(p))
				}
			})
		}
	})
	t.Run("closed without CONNACK", func(t *testing.T) {
		for name, b := range map[string][]byte{
			"protocol name":          (&mqtt.Connect{ProtocolName: "HTTP", ProtocolLevel: 4, ClientID: "dev-01"}).Encode(nil),
			"first packet subscribe": (&mqtt.Subscribe{PacketID: 1, Subscriptions: []mqtt.Subscription{{Filter: "#"}}}).Encode(nil),
			"first packet publish":   (&mqtt.Publish{Topic: mqtttest.RegisterTopic("1")}).Encode(nil),
			"garbage":                []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			"password without user":  {0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x42, 0, 60, 0, 0, 0, 0},
		} {
			t.Run(name, func(t *testing.T) {
				c := h.dial(t, nil)
				if err := c.TrySend(b); err != nil {
					t.Fatal(err)
				}
				c.ExpectClosed(mqtttest.Timeout)
			})
		}
	})
	h.waitLog(t, "reason=\"CONNACK 0x02: client ID \\\"dev-02\\\" is not the registration ID \\\"dev-01\\\" of the user name\"")
	if got := value(h.Metrics.Refusals.WithLabelValues("mqtt", "bad_username")); got != 5 {
		t.Errorf("dpsd_mqtt_refusals_total{bad_username} = %v, want 5", got)
	}
}

// TestSubscribe: only $dps/registrations/res/# is granted, at most QoS 1;
// a refused filter does not close the connection.
func TestSubscribe(t *testing.T) {
	h := newHarness(t, options{fake: true})
	c := h.dial(t, nil)
	c.MustConnect(h.Scope, "dev", "")
	tests := []struct {
		qos     byte
		filters []string
		want    []byte
	}{
		{1, []string{"#"}, []byte{0x80}},
		{0, []string{"$dps/registrations/res/+"}, []byte{0x80}},
		{1, []string{"$dps/#", "$SYS/#", "devices/dev/messages/devicebound/#"}, []byte{0x80, 0x80, 0x80}},
		{2, []string{mqtt.ResponseFilter}, []byte{1}},
		{1, []string{mqtt.ResponseFilter, "#"}, []byte{1, 0x80}},
	}
	for _, tt := range tests {
		if got := c.Subscribe(tt.qos, tt.filters...); !bytes.Equal(got, tt.want) {
			t.Errorf("SUBSCRIBE %v at QoS %d: SUBACK %v, want %v", tt.filters, tt.qos, got, tt.want)
		}
	}
	if a := c.Register("1", nil); a.Status != 202 || a.QoS != 1 {
		t.Errorf("after refused subscriptions: %s", a.Topic)
	}
	// Granted QoS 0: the response comes at QoS 0.
	if got := c.Subscribe(0, mqtt.ResponseFilter); !bytes.Equal(got, []byte{0}) {
		t.Errorf("SUBACK %v", got)
	}
	if a := c.Register("2", nil); a.QoS != 0 {
		t.Errorf("QoS %d after a QoS 0 subscription", a.QoS)
	}
	// Unsubscribed: the request is acknowledged and handled, nothing is
	// delivered.
	c.Send(&mqtt.Unsubscribe{PacketID: 77, Filters: []string{mqtt.ResponseFilter}})
	if ack, ok := c.Next().(*mqtt.Ack); !ok || ack.PacketID != 77 {
		t.Fatalf("UNSUBSCRIBE not acknowledged")
	}
	n := h.Fake.count()
	c.Publish(mqtttest.RegisterTopic("3"), nil)
	if p, err := c.Read(short); err == nil {
		t.Errorf("got %s without a subscription", mqtt.TypeName(p))
	}
	if h.Fake.count() != n+1 {
		t.Errorf("the request was not handled")
	}
	if got := value(h.Metrics.Refusals.WithLabelValues("mqtt", "subscription_refused")); got != 6 {
		t.Errorf("subscription_refused = %v, want 6", got)
	}
}

// TestRefusedPackets: what closes a connection — and nothing else: another
// device connected at the same time keeps registering.
func TestRefusedPackets(t *testing.T) {
	h := newHarness(t, options{fake: true, maxPacket: 200 << 10})
	other := h.device(t, false, "bystander", provtest.Cred{SAS: sasPassword})
	otherWS := h.device(t, true, "bystander-ws", provtest.Cred{SAS: sasPassword})
	big := make([]byte, dps.MaxMessageBytes+1)
	tests := map[string]struct {
		send   []byte
		reason string
	}{
		"publish outside $dps":          {(&mqtt.Publish{QoS: 1, PacketID: 1, Topic: "devices/dev/messages/events/"}).Encode(nil), "topic_not_allowed"},
		"publish to the response topic": {(&mqtt.Publish{QoS: 1, PacketID: 1, Topic: "$dps/registrations/res/200/?$rid=1"}).Encode(nil), "topic_not_allowed"},
		"publish qos 0 outside $dps":    {(&mqtt.Publish{Topic: "a/b"}).Encode(nil), "topic_not_allowed"},
		"register without $rid":         {(&mqtt.Publish{QoS: 1, PacketID: 1, Topic: "$dps/registrations/PUT/iotdps-register/"}).Encode(nil), "no_rid"},
		"publish qos 2":                 {(&mqtt.Publish{QoS: 2, PacketID: 1, Topic: mqtttest.RegisterTopic("1")}).Encode(nil), "protocol_error"},
		"payload over 96 KB":            {(&mqtt.Publish{QoS: 1, PacketID: 1, Topic: mqtttest.RegisterTopic("1"), Payload: big}).Encode(nil), "packet_too_large"},
		// Only the header of a 1 MB packet: the server must not wait for the body.
		"remaining length over the limit": {[]byte{0x32, 0x80, 0x80, 0x40}, "packet_too_large"},
		"second connect":                  {(&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev", UsernameFlag: true, Username: mqtttest.Username(h.Scope, "dev")}).Encode(nil), "protocol_error"},
		"pubrel":                          {(&mqtt.Ack{Type: 6, PacketID: 1}).Encode(nil), "protocol_error"},
		"connack from the client":         {(&mqtt.Connack{}).Encode(nil), "protocol_error"},
		"malformed subscribe":             {[]byte{0x80, 5, 0, 1, 0, 1, '#'}, "protocol_error"},
		"garbage":                         {[]byte{0xff, 0xff, 0xff, 0xff, 0xff}, "protocol_error"},
	}
	i := 0
	for name, tt := range tests {
		i++
		rid := fmt.Sprint("still-", i)
		t.Run(name, func(t *testing.T) {
			for _, ws := range []bool{false, true} {
				before := value(h.Metrics.Refusals.WithLabelValues(transportName(ws), tt.reason))
				c := h.device(t, ws, "dev", provtest.Cred{SAS: sasPassword})
				n := h.Fake.count()
				if err := c.TrySend(tt.send); err != nil {
					t.Fatal(err)
				}
				c.ExpectClosed(mqtttest.Timeout)
				if h.Fake.count() != n {
					t.Errorf("the refused packet reached the provisioner")
				}
				deadline := time.Now().Add(5 * time.Second)
				for value(h.Metrics.Refusals.WithLabelValues(transportName(ws), tt.reason)) != before+1 {
					if time.Now().After(deadline) {
						t.Fatalf("dpsd_mqtt_refusals_total{%s,%s} did not increase", transportName(ws), tt.reason)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			for _, d := range []*mqtttest.Conn{other, otherWS} {
				if a := d.Register(rid, nil); a.Status != 202 || a.String("status") != "assigned" {
					t.Errorf("the other device: %s %s", a.Topic, a.Raw)
				}
			}
		})
	}
	h.waitLog(t, `msg="mqtt connection refused"`)
	h.waitLog(t, `devices publish only to $dps/registrations/PUT/iotdps-register/?$rid={rid}`)
}

func transportName(ws bool) string {
	if ws {
		return mqtt.TransportWebSocket
	}
	return mqtt.TransportTLS
}

// TestTimeouts: no CONNECT in time, no TLS handshake, keep-alive.
func TestTimeouts(t *testing.T) {
	h := newHarness(t, options{fake: true, connectTimeout: 300 * time.Millisecond})
	t.Run("group", func(t *testing.T) { timeouts(t, h) })
	h.waitLog(t, "no CONNECT within 300ms of connecting")
	h.waitLog(t, "no packet within 1.5 × the keep-alive (1.5s)")
}

func timeouts(t *testing.T, h *harness) {
	t.Run("no CONNECT", func(t *testing.T) {
		t.Parallel()
		c := h.dial(t, nil)
		start := time.Now()
		c.ExpectClosed(5 * time.Second)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("closed after %s", d)
		}
	})
	t.Run("no TLS handshake", func(t *testing.T) {
		t.Parallel()
		raw := mqtttest.DialTCP(t, h.Addr)
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(raw); err != nil {
			t.Errorf("the server did not close the connection: %v", err)
		}
	})
	t.Run("plain MQTT on the TLS port", func(t *testing.T) {
		t.Parallel()
		raw := mqtttest.DialTCP(t, h.Addr)
		raw.Write((&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "d"}).Encode(nil))
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(raw)
		if len(b) > 0 && b[0] == 0x20 {
			t.Errorf("a CONNACK on a connection without TLS")
		}
	})
	t.Run("keep-alive", func(t *testing.T) {
		t.Parallel()
		c := h.dial(t, nil)
		if rc := c.ConnectWith(&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, KeepAlive: 1, ClientID: "dev",
			UsernameFlag: true, Username: mqtttest.Username(h.Scope, "dev")}); rc != 0 {
			t.Fatal(rc)
		}
		// PINGREQ every 0.5 s keeps it open past 1.5 s...
		for range 5 {
			time.Sleep(500 * time.Millisecond)
			c.Send(mqtt.Pingreq)
			if p := c.Next(); mqtt.TypeName(p) != "pingresp" {
				t.Fatalf("got %s", mqtt.TypeName(p))
			}
		}
		// ...silence closes it after 1.5 × 1 s.
		start := time.Now()
		c.ExpectClosed(8 * time.Second)
		if d := time.Since(start); d < time.Second || d > 5*time.Second {
			t.Errorf("closed after %s, want about 1.5 s", d)
		}
	})
	t.Run("keep-alive 0", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, options{fake: true, idleTimeout: 500 * time.Millisecond})
		c := h.dial(t, nil)
		if rc := c.ConnectWith(&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev",
			UsernameFlag: true, Username: mqtttest.Username(h.Scope, "dev")}); rc != 0 {
			t.Fatal(rc)
		}
		c.ExpectClosed(5 * time.Second)
	})
	t.Run("pings without a request", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, options{fake: true, idleTimeout: 700 * time.Millisecond})
		c := h.dial(t, nil)
		if rc := c.ConnectWith(&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, KeepAlive: 60, ClientID: "dev",
			UsernameFlag: true, Username: mqtttest.Username(h.Scope, "dev")}); rc != 0 {
			t.Fatal(rc)
		}
		c.Subscribe(1, mqtt.ResponseFilter)
		// A request moves the bound: the connection is still open after it.
		if a := c.Register("r", nil); a.Status != 202 {
			t.Fatalf("register: %s", a.Topic)
		}
		// PINGREQs within the keep-alive do not keep a connection that
		// makes no request.
		for deadline := time.Now().Add(10 * time.Second); ; {
			if time.Now().After(deadline) {
				t.Fatal("a connection that only pings stayed open for 10 s")
			}
			time.Sleep(100 * time.Millisecond)
			if c.TrySend(mqtt.Pingreq.Encode(nil)) != nil {
				break
			}
			p, err := c.Read(5 * time.Second)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server neither answered a PINGREQ nor closed the connection")
			}
			if err != nil {
				break // closed
			}
			if mqtt.TypeName(p) != "pingresp" {
				t.Fatalf("got %s", mqtt.TypeName(p))
			}
		}
		h.waitLog(t, "no register or operation-status request within 700ms")
	})
}

// TestWebSocket: the upgrade rules of /$iothub/websocket and the client
// certificate of the HTTPS connection.
func TestWebSocket(t *testing.T) {
	h := newHarness(t, options{fake: true})
	for _, proto := range []string{"mqtt", "MQTT", "Mqtt"} {
		c := mqtttest.DialWebSocket(t, h.WSURL, h.tlsConfig(nil), proto)
		c.MustConnect(h.Scope, "dev", sasPassword)
		c.Subscribe(1, mqtt.ResponseFilter)
		if a := c.Register("1", nil); a.Status != 202 {
			t.Errorf("subprotocol %s: %s", proto, a.Topic)
		}
		c.Disconnect()
	}
	for name, protos := range map[string][]string{"none": nil, "other": {"mqttv3.1", "wamp"}} {
		resp := mqtttest.WebSocketResponse(t, h.WSURL, h.tlsConfig(nil), protos...)
		if resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("subprotocols %s: %v, want 400", name, resp)
			continue
		}
		if !strings.Contains(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("refusal content type %q", resp.Header.Get("Content-Type"))
		}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: h.tlsConfig(nil)}}
	resp, err := hc.Get(strings.Replace(h.WSURL, "wss://", "https://", 1))
	if err != nil {
		t.Fatal(err)
	}
	var e dps.ErrorDetails
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 400 || e.ErrorCode != 400000 || !strings.Contains(e.Message, "WebSocket upgrade") {
		t.Errorf("GET without upgrade: %d %+v", resp.StatusCode, e)
	}

	// X.509 over WebSocket: the HTTPS connection's client chain.
	leaf, key := testutil.SelfSigned(t, pki.Options{CommonName: "ws-x509"})
	c := h.device(t, true, "ws-x509", provtest.Cred{Cert: testutil.TLSCert(key, leaf)})
	c.Register("1", nil)
	certs := h.Fake.last(t).Req.Credentials.Certificates
	if len(certs) != 1 || !certs[0].Equal(leaf) || h.Fake.last(t).Req.Credentials.SAS != "" {
		t.Errorf("credentials %+v", h.Fake.last(t).Req.Credentials)
	}

	// A text message is not MQTT.
	d := websocket.Dialer{TLSClientConfig: h.tlsConfig(nil), Subprotocols: []string{"mqtt"}}
	ws, _, err := d.Dial(h.WSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte("hello"))
	ws.SetReadDeadline(time.Now().Add(mqtttest.Timeout))
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Errorf("a text message did not close the connection")
	}
	// A packet split over several messages, and several packets in one.
	ws2, _, err := d.Dial(h.WSURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	connect := (&mqtt.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "dev", UsernameFlag: true, Username: mqtttest.Username(h.Scope, "dev")}).Encode(nil)
	ws2.WriteMessage(websocket.BinaryMessage, connect[:3])
	ws2.WriteMessage(websocket.BinaryMessage, connect[3:])
	ws2.WriteMessage(websocket.BinaryMessage, append(mqtt.Pingreq.Encode(nil), mqtt.Pingreq.Encode(nil)...))
	ws2.SetReadDeadline(time.Now().Add(mqtttest.Timeout))
	var got []byte
	for len(got) < 8 {
		_, m, err := ws2.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m...)
	}
	if want := []byte{0x20, 2, 0, 0, 0xd0, 0, 0xd0, 0}; !bytes.Equal(got, want) {
		t.Errorf("got % x, want % x", got, want)
	}
}

// TestX509OverTLS: the TLS client chain, leaf first, is the credential;
// there is no password.
func TestX509OverTLS(t *testing.T) {
	h := newHarness(t, options{fake: true})
	root := testutil.NewRoot(t, pki.Options{CommonName: "Root"})
	inter := root.Intermediate(t, pki.Options{CommonName: "Inter"})
	leaf, key := inter.Leaf(t, pki.Options{CommonName: "chained"})
	c := h.device(t, false, "chained", provtest.Cred{Cert: testutil.TLSCert(key, leaf, inter.Cert)})
	c.Register("1", nil)
	cr := h.Fake.last(t).Req.Credentials
	if len(cr.Certificates) != 2 || !cr.Certificates[0].Equal(leaf) || !cr.Certificates[1].Equal(inter.Cert) || cr.SAS != "" {
		t.Errorf("credentials: %d certificates, SAS %q", len(cr.Certificates), cr.SAS)
	}
}

// TestALPN: MQTT clients that offer ALPN protocols (not http/1.1) connect.
func TestALPN(t *testing.T) {
	h := newHarness(t, options{fake: true})
	cfg := h.tlsConfig(nil)
	cfg.NextProtos = []string{"mqtt", "x-amzn-mqtt-ca"}
	c := mqtttest.DialTLS(t, h.Addr, cfg)
	c.MustConnect(h.Scope, "dev", "")
}

// TestShutdown: idle connections are closed, a request in progress is
// answered first, new connections are refused.
func TestShutdown(t *testing.T) {
	h := newHarness(t, options{fake: true})
	idle := h.device(t, false, "idle", provtest.Cred{})
	idleWS := h.device(t, true, "idle-ws", provtest.Cred{})
	busy := h.device(t, false, "busy", provtest.Cred{})
	release := make(chan struct{})
	started := make(chan struct{})
	h.Fake.set(func(req provisioning.Request) (*provisioning.Answer, error) {
		close(started)
		<-release
		return &provisioning.Answer{Status: 202, Body: &dps.RegistrationOperationStatus{OperationID: "op", Status: dps.StatusAssigned}}, nil
	}, nil)
	busy.Publish(mqtttest.RegisterTopic("slow"), nil)
	<-started
	done := make(chan error, 1)
	go func() { done <- shutdown(h.Server, 10*time.Second) }()
	idle.ExpectClosed(5 * time.Second)
	idleWS.ExpectClosed(5 * time.Second)
	close(release)
	if a := mqtttest.ParseResponse(t, busy.Response()); a.Status != 202 {
		t.Errorf("the request in progress: %s", a.Topic)
	}
	busy.ExpectClosed(5 * time.Second)
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := mqtttest.TryDialTLS(t, h.Addr, h.tlsConfig(nil)); err == nil {
		t.Errorf("a connection after Shutdown was accepted")
	}
}

func shutdown(s *mqtt.Server, d time.Duration) error {
	ctx, cancel := contextWithTimeout(d)
	defer cancel()
	return s.Shutdown(ctx)
}

// TestGarbageAfterConnect throws random bytes at connected sessions: the
// server never panics and keeps serving.
func TestGarbageAfterConnect(t *testing.T) {
	h := newHarness(t, options{fake: true})
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := newRand(seed)
	for i := range 50 {
		c := h.dial(t, nil)
		c.MustConnect(h.Scope, "dev", "")
		b := make([]byte, 1+rnd.IntN(300))
		for j := range b {
			b[j] = byte(rnd.Uint32())
		}
		c.TrySend(b)
		c.Close()
		_ = i
	}
	c := h.device(t, false, "after", provtest.Cred{})
	if a := c.Register("1", nil); a.Status != 202 {
		t.Errorf("after garbage: %s", a.Topic)
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed)) }

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}
