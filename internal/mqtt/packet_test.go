package mqtt

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestPacketRoundTrip(t *testing.T) {
	tests := map[string]Packet{
		"connect/x509": &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, KeepAlive: 180,
			ClientID: "device-01", UsernameFlag: true, Username: "0ne00111111/registrations/device-01/api-version=2019-03-31"},
		"connect/sas": &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, KeepAlive: 60, ClientID: "dev",
			UsernameFlag: true, Username: "0ne00111111/registrations/dev/api-version=2019-03-31",
			PasswordFlag: true, Password: []byte("SharedAccessSignature sr=x&sig=y&se=1")},
		"connect/will": &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, WillFlag: true, WillQoS: 1, WillRetain: true,
			WillTopic: "w", WillMessage: []byte("bye"), ClientID: "c"},
		"connack/ok":         &Connack{},
		"connack/refused":    &Connack{ReturnCode: ConnRefusedBadUsername},
		"connack/session":    &Connack{SessionPresent: true},
		"publish/qos0":       &Publish{Topic: "$dps/registrations/PUT/iotdps-register/?$rid=1", Payload: []byte{}},
		"publish/qos1":       &Publish{QoS: 1, PacketID: 7, Topic: "$dps/registrations/res/200/?$rid=7", Payload: []byte(`{"status":"assigned"}`)},
		"publish/dup-retain": &Publish{QoS: 1, Dup: true, Retain: true, PacketID: 65535, Topic: "t", Payload: []byte(" ")},
		"publish/qos2":       &Publish{QoS: 2, PacketID: 3, Topic: "t", Payload: []byte("x")},
		"publish/large":      &Publish{QoS: 1, PacketID: 1, Topic: "t", Payload: bytes.Repeat([]byte("a"), 200_000)},
		"puback":             Puback(1),
		"pubrec":             &Ack{Type: typePubrec, PacketID: 2},
		"pubrel":             &Ack{Type: typePubrel, PacketID: 3},
		"pubcomp":            &Ack{Type: typePubcomp, PacketID: 4},
		"subscribe": &Subscribe{PacketID: 1, Subscriptions: []Subscription{
			{Filter: "$dps/registrations/res/#", QoS: 1}, {Filter: "#", QoS: 0}}},
		"suback":      &Suback{PacketID: 1, ReturnCodes: []byte{1, SubackFailure}},
		"unsubscribe": &Unsubscribe{PacketID: 9, Filters: []string{"$dps/registrations/res/#"}},
		"unsuback":    Unsuback(9),
		"pingreq":     Pingreq,
		"pingresp":    Pingresp,
		"disconnect":  Disconnect,
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			b := p.Encode(nil)
			got, err := ReadPacket(bytes.NewReader(b), 1<<20)
			if err != nil {
				t.Fatalf("ReadPacket(%x): %v", b[:min(len(b), 64)], err)
			}
			if !reflect.DeepEqual(got, p) {
				t.Errorf("round trip:\n got %#v\nwant %#v", got, p)
			}
		})
	}
}

// TestPacketBytes pins the wire form of what the server writes.
func TestPacketBytes(t *testing.T) {
	tests := map[string]struct {
		p    Packet
		want []byte
	}{
		"connack":  {&Connack{ReturnCode: 5}, []byte{0x20, 2, 0, 5}},
		"puback":   {Puback(0x0102), []byte{0x40, 2, 1, 2}},
		"suback":   {&Suback{PacketID: 1, ReturnCodes: []byte{1, 0x80}}, []byte{0x90, 4, 0, 1, 1, 0x80}},
		"unsuback": {Unsuback(2), []byte{0xb0, 2, 0, 2}},
		"pingresp": {Pingresp, []byte{0xd0, 0}},
		"publish": {&Publish{QoS: 1, PacketID: 1, Topic: "a/b", Payload: []byte("{}")},
			[]byte{0x32, 9, 0, 3, 'a', '/', 'b', 0, 1, '{', '}'}},
	}
	for name, tt := range tests {
		if got := tt.p.Encode(nil); !bytes.Equal(got, tt.want) {
			t.Errorf("%s: got % x, want % x", name, got, tt.want)
		}
	}
	// Remaining lengths at the boundaries of the variable-length encoding.
	for _, n := range []int{0, 127, 128, 16383, 16384, 2097151, 2097152} {
		h := appendHeader(nil, 0x30, n)
		wantLen := 2
		switch {
		case n > 2097151:
			wantLen = 5
		case n > 16383:
			wantLen = 4
		case n > 127:
			wantLen = 3
		}
		if len(h) != wantLen {
			t.Errorf("remaining length %d: header % x has %d bytes, want %d", n, h, len(h), wantLen)
		}
	}
}

func TestReadPacketMalformed(t *testing.T) {
	connect := func(mutate func([]byte) []byte) []byte {
		b := (&Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, ClientID: "c", UsernameFlag: true, Username: "u"}).Encode(nil)
		return mutate(b)
	}
	tests := map[string][]byte{
		"reserved type 0":              {0x00, 0},
		"reserved type 15":             {0xf0, 0},
		"remaining length 5 bytes":     {0x30, 0xff, 0xff, 0xff, 0xff, 0x01},
		"subscribe flags 0":            {0x80, 5, 0, 1, 0, 1, '#'},
		"puback flags":                 {0x41, 2, 0, 1},
		"puback short":                 {0x40, 1, 0},
		"puback long":                  {0x40, 3, 0, 1, 0},
		"puback id 0":                  {0x40, 2, 0, 0},
		"pingreq with body":            {0xc0, 1, 0},
		"publish qos3":                 {0x36, 4, 0, 1, 't', 0},
		"publish qos0 dup":             {0x38, 3, 0, 1, 't'},
		"publish empty topic":          {0x30, 2, 0, 0},
		"publish wildcard topic":       {0x30, 3, 0, 1, '#'},
		"publish plus topic":           {0x30, 5, 0, 3, 'a', '+', 'b'},
		"publish topic overruns":       {0x30, 3, 0, 9, 't'},
		"publish qos1 no id":           {0x32, 3, 0, 1, 't'},
		"publish invalid utf8":         {0x30, 4, 0, 2, 0xc3, 0x28},
		"publish topic nul":            {0x30, 4, 0, 2, 'a', 0},
		"subscribe no filter":          {0x82, 2, 0, 1},
		"subscribe qos3":               {0x82, 6, 0, 1, 0, 1, '#', 3},
		"subscribe missing qos":        {0x82, 5, 0, 1, 0, 1, '#'},
		"unsubscribe no filter":        {0xa2, 2, 0, 1},
		"suback bad code":              {0x90, 3, 0, 1, 3},
		"connack bad flags":            {0x20, 2, 2, 0},
		"connect reserved flag":        connect(func(b []byte) []byte { b[9] |= 1; return b }),
		"connect password no username": connect(func(b []byte) []byte { b[9] = 0x42; return b }),
		"connect will qos no will":     connect(func(b []byte) []byte { b[9] |= 0x08; return b }),
		"connect truncated":            connect(func(b []byte) []byte { b[1] -= 2; return b[:len(b)-2] }),
		"connect trailing bytes":       connect(func(b []byte) []byte { b[1]++; return append(b, 0) }),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := ReadPacket(bytes.NewReader(b), 1<<20)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadPacket(% x) = %#v, %v; want ErrMalformed", b, p, err)
			}
		})
	}
}

func TestReadPacketLimitsAndEOF(t *testing.T) {
	big := (&Publish{Topic: "t", Payload: make([]byte, 1000)}).Encode(nil)
	_, err := ReadPacket(bytes.NewReader(big), 999)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Remaining != 1003 || tl.Type != "publish" {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := ReadPacket(bytes.NewReader(nil), 10); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
	for _, b := range [][]byte{{0x30}, {0x30, 0x80}, {0x30, 5, 0, 1}} {
		if _, err := ReadPacket(bytes.NewReader(b), 10); err != io.ErrUnexpectedEOF {
			t.Errorf("truncated % x: %v, want io.ErrUnexpectedEOF", b, err)
		}
	}
	// A stream of several packets reads one at a time.
	var stream []byte
	stream = Pingreq.Encode(stream)
	stream = Puback(3).Encode(stream)
	stream = Disconnect.Encode(stream)
	r := bytes.NewReader(stream)
	for _, want := range []string{"pingreq", "puback", "disconnect"} {
		p, err := ReadPacket(r, 10)
		if err != nil || TypeName(p) != want {
			t.Fatalf("stream: %v %v, want %s", p, err, want)
		}
	}
}

func TestConnectOtherProtocolLevel(t *testing.T) {
	// An MQTT 5 CONNECT (properties after the keep-alive) decodes far
	// enough for the server to answer 0x01.
	b := []byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 60, 0, 0, 3, 'd', 'e', 'v', 0, 0}
	b[1] = byte(len(b) - 2)
	p, err := ReadPacket(bytes.NewReader(b), 100)
	if err != nil {
		t.Fatal(err)
	}
	if c := p.(*Connect); c.ProtocolLevel != 5 || c.ProtocolName != "MQTT" {
		t.Errorf("got %#v", c)
	}
}

// FuzzReadPacket: the decoder never panics, and whatever it accepts
// re-encodes to a packet that decodes to the same value.
func FuzzReadPacket(f *testing.F) {
	seeds := []Packet{
		&Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, ClientID: "d", UsernameFlag: true, Username: "s/registrations/d/api-version=1", PasswordFlag: true, Password: []byte("p")},
		&Publish{QoS: 1, PacketID: 1, Topic: "$dps/registrations/PUT/iotdps-register/?$rid=1", Payload: []byte(`{"registrationId":"d"}`)},
		&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "$dps/registrations/res/#", QoS: 1}}},
		&Unsubscribe{PacketID: 1, Filters: []string{"a"}},
		&Suback{PacketID: 1, ReturnCodes: []byte{0x80}},
		&Connack{ReturnCode: 2}, Puback(1), Pingreq, Disconnect,
	}
	for _, s := range seeds {
		f.Add(s.Encode(nil))
	}
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadPacket(bytes.NewReader(b), 1<<16)
		if err != nil {
			return
		}
		if c, ok := p.(*Connect); ok && c.ProtocolLevel != 3 && c.ProtocolLevel != 4 {
			return // only the level is decoded
		}
		again, err := ReadPacket(bytes.NewReader(p.Encode(nil)), 1<<16)
		if err != nil {
			t.Fatalf("re-encoded %#v does not decode: %v", p, err)
		}
		if !reflect.DeepEqual(normalize(p), normalize(again)) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", again, p)
		}
	})
}

// normalize maps nil and empty byte slices together.
func normalize(p Packet) Packet {
	switch p := p.(type) {
	case *Publish:
		c := *p
		if len(c.Payload) == 0 {
			c.Payload = nil
		}
		return &c
	case *Connect:
		c := *p
		if len(c.Password) == 0 {
			c.Password = nil
		}
		if len(c.WillMessage) == 0 {
			c.WillMessage = nil
		}
		return &c
	}
	return p
}

func TestTypeNames(t *testing.T) {
	for i, n := range typeNames {
		if n == "" || strings.ToLower(n) != n {
			t.Errorf("type %d: %q", i, n)
		}
	}
}
