package dps

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// Identifier limits from the DPS documentation.
const (
	MaxIDLength       = 128 // registration and enrollment IDs
	MaxX509IDLength   = 64  // an X.509 registration ID is a subject CN
	MaxCANameLength   = 256
	MaxMessageBytes   = 96 << 10 // largest request body DPS accepts
	MaxBulkItems      = 10
	MinSymmetricKey   = 16
	MaxSymmetricKey   = 64
	GeneratedKeyBytes = 64 // symmetric keys the service generates for enrollments, as Azure does
	PolicyKeyBytes    = 32 // keys the service generates for shared access policies
)

// ValidateID checks a registration ID, enrollment ID or enrollment group ID:
// at most 128 characters of ASCII letters, digits and - . _ :, starting with a
// letter or digit and ending with a letter, digit or '-'. kind names the value
// in the error ("registration ID", "enrollment group ID").
func ValidateID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s is empty", kind)
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("%s %q is %d characters long; the limit is %d", kind, Truncate(id), len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case isAlnum(c):
		case c == '-' || c == '.' || c == '_' || c == ':':
			if i == 0 {
				return fmt.Errorf("%s %q must start with a letter or digit, not %q", kind, id, c)
			}
			if i == len(id)-1 && c != '-' {
				return fmt.Errorf("%s %q must end with a letter, digit or '-', not %q", kind, id, c)
			}
		default:
			return fmt.Errorf("%s %q contains %q at position %d; only letters, digits and - . _ : are allowed", kind, Truncate(id), rune(c), i+1)
		}
	}
	return nil
}

// ValidateDeviceID checks an IoT Hub device ID: at most 128 characters of
// ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '.
func ValidateDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("device ID is empty")
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("device ID %q is %d characters long; the limit is %d", Truncate(id), len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if isAlnum(c) || indexByte("-.%_*?!(),:=@$'", c) {
			continue
		}
		return fmt.Errorf("device ID %q contains %q at position %d", Truncate(id), rune(c), i+1)
	}
	return nil
}

var caNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ValidateCAName checks a CA certificate name: alphanumerics and - . _, at
// most 256 characters.
func ValidateCAName(name string) error {
	if name == "" {
		return fmt.Errorf("certificate name is empty")
	}
	if len(name) > MaxCANameLength {
		return fmt.Errorf("certificate name is %d characters long; the limit is %d", len(name), MaxCANameLength)
	}
	if !caNameRE.MatchString(name) {
		return fmt.Errorf("certificate name %q may contain only letters, digits and - . _", Truncate(name))
	}
	return nil
}

// ValidateHostName checks an IoT hub host name such as myhub.azure-devices.net.
func ValidateHostName(h string) error {
	if h == "" {
		return fmt.Errorf("IoT hub host name is empty")
	}
	if len(h) > 253 {
		return fmt.Errorf("IoT hub host name is longer than 253 characters")
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if isAlnum(c) || c == '-' || c == '.' || c == ':' {
			continue
		}
		return fmt.Errorf("IoT hub host name %q contains %q", Truncate(h), rune(c))
	}
	if h[0] == '.' || h[0] == '-' || h[len(h)-1] == '.' {
		return fmt.Errorf("IoT hub host name %q is not a valid DNS name", h)
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func indexByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

// maxEcho is how much of a value a message quotes.
const maxEcho = 64

// Truncate shortens a value a client sent, for quoting it in a message or a
// log line: past 64 bytes it is cut (at a character boundary) and its
// length said, so that a 20 KB ID scope is not echoed back, or logged,
// whole.
func Truncate(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", s[:cut], len(s))
}

// NewUUID returns a random (version 4) UUID, used for tracking and request IDs.
func NewUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// NewOperationID returns an operation ID in the shape Azure uses,
// {digit}.{16 hex}.{uuid}: URL- and MQTT-topic-safe, and opaque to clients.
// The 16 hex digits are the time of issue in nanoseconds, so that IDs
// issued one after another sort one after another: the store's index of
// operations then grows at its end instead of at a random page per
// registration, which made each commit write a page per operation. The
// random UUID keeps them unique and unguessable.
func NewOperationID(node byte) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
	return fmt.Sprintf("%d.%x.%s", node%10, b, NewUUID())
}
