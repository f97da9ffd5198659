package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// MQTT 3.1.1 control packet types (MQTT 3.1.1 §2.2.1).
const (
	typeConnect     = 1
	typeConnack     = 2
	typePublish     = 3
	typePuback      = 4
	typePubrec      = 5
	typePubrel      = 6
	typePubcomp     = 7
	typeSubscribe   = 8
	typeSuback      = 9
	typeUnsubscribe = 10
	typeUnsuback    = 11
	typePingreq     = 12
	typePingresp    = 13
	typeDisconnect  = 14
)

var typeNames = [16]string{"reserved", "connect", "connack", "publish", "puback", "pubrec", "pubrel", "pubcomp",
	"subscribe", "suback", "unsubscribe", "unsuback", "pingreq", "pingresp", "disconnect", "reserved"}

// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
const (
	ConnAccepted             byte = 0x00
	ConnRefusedProtocol      byte = 0x01 // unacceptable protocol version
	ConnRefusedIdentifier    byte = 0x02 // identifier rejected
	ConnRefusedUnavailable   byte = 0x03 // server unavailable
	ConnRefusedBadUsername   byte = 0x04 // bad user name or password
	ConnRefusedNotAuthorized byte = 0x05 // not authorized
)

// SubackFailure is the SUBACK return code of a refused subscription.
const SubackFailure byte = 0x80

// Packet is one MQTT control packet.
type Packet interface {
	// Encode appends the packet's wire form to dst.
	Encode(dst []byte) []byte
	kind() byte
}

// TypeName names the packet type of p (for logs and metrics).
func TypeName(p Packet) string { return typeNames[p.kind()] }

// Connect is CONNECT. Will fields are decoded so the packet is consumed
// correctly; dpsd never publishes wills (it is not a broker).
type Connect struct {
	ProtocolName  string
	ProtocolLevel byte
	CleanSession  bool
	WillFlag      bool
	WillQoS       byte
	WillRetain    bool
	KeepAlive     uint16 // seconds
	ClientID      string
	WillTopic     string
	WillMessage   []byte
	UsernameFlag  bool
	Username      string
	PasswordFlag  bool
	Password      []byte
}

// Connack is CONNACK.
type Connack struct {
	SessionPresent bool
	ReturnCode     byte
}

// Publish is PUBLISH at QoS 0 or 1 (QoS 2 decodes, and the server refuses it).
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	PacketID uint16 // QoS > 0 only
	Payload  []byte
}

// Ack is one of the packets that carry only a packet identifier: PUBACK,
// PUBREC, PUBREL, PUBCOMP, UNSUBACK.
type Ack struct {
	Type     byte
	PacketID uint16
}

// Subscription is one topic filter of a SUBSCRIBE.
type Subscription struct {
	Filter string
	QoS    byte
}

// Subscribe is SUBSCRIBE.
type Subscribe struct {
	PacketID      uint16
	Subscriptions []Subscription
}

// Suback is SUBACK.
type Suback struct {
	PacketID    uint16
	ReturnCodes []byte
}

// Unsubscribe is UNSUBSCRIBE.
type Unsubscribe struct {
	PacketID uint16
	Filters  []string
}

// Simple is a packet without variable header or payload: PINGREQ, PINGRESP,
// DISCONNECT.
type Simple struct{ Type byte }

func (*Connect) kind() byte     { return typeConnect }
func (*Connack) kind() byte     { return typeConnack }
func (*Publish) kind() byte     { return typePublish }
func (a *Ack) kind() byte       { return a.Type }
func (*Subscribe) kind() byte   { return typeSubscribe }
func (*Suback) kind() byte      { return typeSuback }
func (*Unsubscribe) kind() byte { return typeUnsubscribe }
func (s *Simple) kind() byte    { return s.Type }
func (p *Publish) String() string {
	return fmt.Sprintf("PUBLISH q%d %q (%d bytes)", p.QoS, p.Topic, len(p.Payload))
}

// Constructors for the packets without fields.
var (
	Pingreq    = &Simple{Type: typePingreq}
	Pingresp   = &Simple{Type: typePingresp}
	Disconnect = &Simple{Type: typeDisconnect}
)

// Puback returns the PUBACK of packet id.
func Puback(id uint16) *Ack { return &Ack{Type: typePuback, PacketID: id} }

// Unsuback returns the UNSUBACK of packet id.
func Unsuback(id uint16) *Ack { return &Ack{Type: typeUnsuback, PacketID: id} }

// ErrMalformed is wrapped by every decoding error caused by the bytes a peer
// sent (as opposed to the connection failing).
var ErrMalformed = errors.New("malformed MQTT packet")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// TooLargeError reports a packet whose remaining length exceeds the limit.
// The packet's body has not been read: the connection must be closed.
type TooLargeError struct {
	Type      string
	Remaining int
	Max       int
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s packet of %d bytes exceeds the %d-byte limit", e.Type, e.Remaining, e.Max)
}

// ReadPacket reads one packet. A remaining length over max is refused before
// the body is read. Errors from r are returned as they are (io.EOF before the
// first byte, io.ErrUnexpectedEOF inside a packet); errors in the bytes wrap
// ErrMalformed.
func ReadPacket(r io.Reader, max int) (Packet, error) {
	var hdr [1]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n += int(b[0]&0x7f) * mult
		if b[0]&0x80 == 0 {
			break
		}
		if i == 3 {
			return nil, malformed("remaining length longer than four bytes")
		}
		mult *= 128
	}
	t := hdr[0] >> 4
	if err := checkFlags(hdr[0]); err != nil {
		return nil, err // before waiting for a body that may never come
	}
	if n > max {
		return nil, &TooLargeError{Type: typeNames[t], Remaining: n, Max: max}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return Decode(hdr[0], body)
}

// Decode parses a packet from its first header byte and its body (the bytes
// after the remaining length).
func Decode(header byte, body []byte) (Packet, error) {
	t, flags := header>>4, header&0x0f
	d := &decoder{b: body}
	if err := checkFlags(header); err != nil {
		return nil, err
	}
	var p Packet
	switch t {
	case typeConnect:
		p = d.connect()
	case typeConnack:
		c := &Connack{}
		ack := d.byte()
		if ack&^1 != 0 {
			d.fail("CONNACK acknowledge flags %08b", ack)
		}
		c.SessionPresent, c.ReturnCode = ack&1 == 1, d.byte()
		p = c
	case typePublish:
		p = d.publish(flags)
	case typePuback, typePubrec, typePubrel, typePubcomp, typeUnsuback:
		p = &Ack{Type: t, PacketID: d.packetID()}
	case typeSubscribe:
		s := &Subscribe{PacketID: d.packetID()}
		for d.err == nil && d.more() {
			f := d.topic("topic filter")
			q := d.byte()
			if q&^3 != 0 || q == 3 {
				d.fail("SUBSCRIBE requested QoS byte %#x", q)
			}
			s.Subscriptions = append(s.Subscriptions, Subscription{Filter: f, QoS: q})
		}
		if d.err == nil && len(s.Subscriptions) == 0 {
			d.fail("SUBSCRIBE without a topic filter")
		}
		p = s
	case typeSuback:
		s := &Suback{PacketID: d.packetID()}
		s.ReturnCodes = append([]byte(nil), d.rest()...)
		for _, c := range s.ReturnCodes {
			if c > 2 && c != SubackFailure {
				d.fail("SUBACK return code %#x", c)
			}
		}
		if d.err == nil && len(s.ReturnCodes) == 0 {
			d.fail("SUBACK without a return code")
		}
		p = s
	case typeUnsubscribe:
		u := &Unsubscribe{PacketID: d.packetID()}
		for d.err == nil && d.more() {
			u.Filters = append(u.Filters, d.topic("topic filter"))
		}
		if d.err == nil && len(u.Filters) == 0 {
			d.fail("UNSUBSCRIBE without a topic filter")
		}
		p = u
	case typePingreq, typePingresp, typeDisconnect:
		p = &Simple{Type: t}
	default:
		return nil, malformed("reserved packet type %d", t)
	}
	if d.err == nil && d.more() {
		d.fail("%d unexpected bytes after the %s packet", len(d.b)-d.i, typeNames[t])
	}
	if d.err != nil {
		return nil, d.err
	}
	return p, nil
}

// checkFlags checks the fixed header's type and flags (MQTT 3.1.1 §2.2.2).
func checkFlags(header byte) error {
	t, flags := header>>4, header&0x0f
	if t == 0 || t == 15 {
		return malformed("reserved packet type %d", t)
	}
	want := byte(0)
	if t == typePubrel || t == typeSubscribe || t == typeUnsubscribe {
		want = 0x02
	}
	if t != typePublish && flags != want {
		return malformed("%s with reserved flags %04b (must be %04b)", typeNames[t], flags, want)
	}
	if t == typePublish && flags&0x06 == 0x06 {
		return malformed("PUBLISH with QoS 3")
	}
	return nil
}

type decoder struct {
	b   []byte
	i   int
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(format, args...)
	}
}

func (d *decoder) more() bool { return d.i < len(d.b) }

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.i >= len(d.b) {
		d.fail("packet ends early")
		return 0
	}
	d.i++
	return d.b[d.i-1]
}

func (d *decoder) uint16() uint16 {
	if d.err != nil {
		return 0
	}
	if len(d.b)-d.i < 2 {
		d.fail("packet ends early")
		return 0
	}
	v := binary.BigEndian.Uint16(d.b[d.i:])
	d.i += 2
	return v
}

func (d *decoder) packetID() uint16 {
	id := d.uint16()
	if d.err == nil && id == 0 {
		d.fail("packet identifier 0")
	}
	return id
}

func (d *decoder) binary() []byte {
	n := int(d.uint16())
	if d.err != nil {
		return nil
	}
	if len(d.b)-d.i < n {
		d.fail("field of %d bytes overruns the packet", n)
		return nil
	}
	v := d.b[d.i : d.i+n]
	d.i += n
	return v
}

// string reads a UTF-8 encoded string (MQTT 3.1.1 §1.5.3): valid UTF-8 without U+0000.
func (d *decoder) string(what string) string {
	b := d.binary()
	if d.err != nil {
		return ""
	}
	if !utf8.Valid(b) {
		d.fail("%s is not valid UTF-8", what)
		return ""
	}
	for _, c := range b {
		if c == 0 {
			d.fail("%s contains U+0000", what)
			return ""
		}
	}
	return string(b)
}

func (d *decoder) topic(what string) string {
	s := d.string(what)
	if d.err == nil && s == "" {
		d.fail("empty %s", what)
	}
	return s
}

func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	v := d.b[d.i:]
	d.i = len(d.b)
	return v
}

func (d *decoder) connect() *Connect {
	c := &Connect{}
	c.ProtocolName = d.string("protocol name")
	c.ProtocolLevel = d.byte()
	if d.err == nil && c.ProtocolLevel != 3 && c.ProtocolLevel != 4 {
		// Another protocol version (MQTT 5 has properties here): the rest
		// has another layout, and the server answers 0x01 from the level.
		d.rest()
		return c
	}
	f := d.byte()
	c.KeepAlive = d.uint16()
	if d.err != nil {
		return c
	}
	if f&0x01 != 0 {
		d.fail("CONNECT reserved flag set")
		return c
	}
	c.CleanSession = f&0x02 != 0
	c.WillFlag = f&0x04 != 0
	c.WillQoS = f >> 3 & 3
	c.WillRetain = f&0x20 != 0
	c.PasswordFlag = f&0x40 != 0
	c.UsernameFlag = f&0x80 != 0
	switch {
	case !c.WillFlag && (c.WillQoS != 0 || c.WillRetain):
		d.fail("CONNECT will QoS or retain set without the will flag")
	case c.WillQoS == 3:
		d.fail("CONNECT will QoS 3")
	case c.PasswordFlag && !c.UsernameFlag:
		d.fail("CONNECT password flag set without the user name flag")
	}
	c.ClientID = d.string("client identifier")
	if c.WillFlag {
		c.WillTopic = d.topic("will topic")
		c.WillMessage = append([]byte(nil), d.binary()...)
	}
	if c.UsernameFlag {
		c.Username = d.string("user name")
	}
	if c.PasswordFlag {
		c.Password = append([]byte(nil), d.binary()...)
	}
	return c
}

func (d *decoder) publish(flags byte) *Publish {
	p := &Publish{Dup: flags&0x08 != 0, QoS: flags >> 1 & 3, Retain: flags&0x01 != 0}
	if p.QoS == 3 {
		d.fail("PUBLISH with QoS 3")
		return p
	}
	if p.QoS == 0 && p.Dup {
		d.fail("PUBLISH QoS 0 with the DUP flag")
		return p
	}
	p.Topic = d.topic("topic name")
	if d.err == nil && containsWildcard(p.Topic) {
		d.fail("PUBLISH topic name %q contains a wildcard", p.Topic)
	}
	if p.QoS > 0 {
		p.PacketID = d.packetID()
	}
	p.Payload = append([]byte{}, d.rest()...)
	return p
}

func containsWildcard(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '+' || s[i] == '#' {
			return true
		}
	}
	return false
}

// Encoding.

func appendHeader(dst []byte, header byte, n int) []byte {
	dst = append(dst, header)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			return dst
		}
	}
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

func appendBinary(dst []byte, b []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

// Encode appends CONNECT.
func (c *Connect) Encode(dst []byte) []byte {
	var body []byte
	body = appendString(body, c.ProtocolName)
	body = append(body, c.ProtocolLevel)
	var f byte
	if c.CleanSession {
		f |= 0x02
	}
	if c.WillFlag {
		f |= 0x04 | c.WillQoS<<3
		if c.WillRetain {
			f |= 0x20
		}
	}
	if c.PasswordFlag {
		f |= 0x40
	}
	if c.UsernameFlag {
		f |= 0x80
	}
	body = append(body, f)
	body = binary.BigEndian.AppendUint16(body, c.KeepAlive)
	body = appendString(body, c.ClientID)
	if c.WillFlag {
		body = appendString(body, c.WillTopic)
		body = appendBinary(body, c.WillMessage)
	}
	if c.UsernameFlag {
		body = appendString(body, c.Username)
	}
	if c.PasswordFlag {
		body = appendBinary(body, c.Password)
	}
	return append(appendHeader(dst, typeConnect<<4, len(body)), body...)
}

// Encode appends CONNACK.
func (c *Connack) Encode(dst []byte) []byte {
	var sp byte
	if c.SessionPresent {
		sp = 1
	}
	return append(appendHeader(dst, typeConnack<<4, 2), sp, c.ReturnCode)
}

// Encode appends PUBLISH.
func (p *Publish) Encode(dst []byte) []byte {
	h := byte(typePublish<<4) | p.QoS<<1
	if p.Dup {
		h |= 0x08
	}
	if p.Retain {
		h |= 0x01
	}
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	dst = appendHeader(dst, h, n)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	}
	return append(dst, p.Payload...)
}

// Encode appends the acknowledgement.
func (a *Ack) Encode(dst []byte) []byte {
	h := a.Type << 4
	if a.Type == typePubrel {
		h |= 0x02
	}
	return binary.BigEndian.AppendUint16(appendHeader(dst, h, 2), a.PacketID)
}

// Encode appends SUBSCRIBE.
func (s *Subscribe) Encode(dst []byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, s.PacketID)
	for _, sub := range s.Subscriptions {
		body = append(appendString(body, sub.Filter), sub.QoS)
	}
	return append(appendHeader(dst, typeSubscribe<<4|0x02, len(body)), body...)
}

// Encode appends SUBACK.
func (s *Suback) Encode(dst []byte) []byte {
	dst = appendHeader(dst, typeSuback<<4, 2+len(s.ReturnCodes))
	dst = binary.BigEndian.AppendUint16(dst, s.PacketID)
	return append(dst, s.ReturnCodes...)
}

// Encode appends UNSUBSCRIBE.
func (u *Unsubscribe) Encode(dst []byte) []byte {
	body := binary.BigEndian.AppendUint16(nil, u.PacketID)
	for _, f := range u.Filters {
		body = appendString(body, f)
	}
	return append(appendHeader(dst, typeUnsubscribe<<4|0x02, len(body)), body...)
}

// Encode appends the packet.
func (s *Simple) Encode(dst []byte) []byte { return appendHeader(dst, s.Type<<4, 0) }
