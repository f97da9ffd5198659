package sas

import (
	"testing"
	"time"
)

// BenchmarkParseVerify is a device's SAS token checked: parsed, then its
// HMAC-SHA256 compared.
func BenchmarkParseVerify(b *testing.B) {
	key := DeriveDeviceKey([]byte("0123456789abcdef0123456789abcdef"), "device-01")
	tok := New(DeviceResource("0ne00111111", "device-01"), "registration", key, time.Now().Add(time.Hour), true)
	b.ReportAllocs()
	for b.Loop() {
		t, err := Parse(tok)
		if err != nil || !t.Verify(key) {
			b.Fatal("the token does not verify", err)
		}
	}
}

// BenchmarkDeriveDeviceKey is a group device's key: HMAC-SHA256 of the
// registration ID with the group key.
func BenchmarkDeriveDeviceKey(b *testing.B) {
	group := []byte("0123456789abcdef0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		DeriveDeviceKey(group, "device-01")
	}
}
