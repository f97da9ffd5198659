package tpm

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzParseActivation: the activation blob comes from the network. Whatever
// the bytes, parsing returns six items that lie inside the blob, or an
// error, and never panics.
func FuzzParseActivation(f *testing.F) {
	var six []byte
	for i := range 6 {
		six = binary.BigEndian.AppendUint16(six, uint16(i))
		six = append(six, bytes.Repeat([]byte{byte(i)}, i)...)
	}
	f.Add(six)
	f.Add(six[:len(six)-1])
	f.Add([]byte{0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseActivation(b)
		if err != nil {
			return
		}
		n := 0
		for _, item := range [][]byte{a.idObject, a.secret, a.duplicate, a.seed, a.public} {
			n += 2 + len(item)
		}
		if n+2 > len(b) {
			t.Fatalf("items of %d bytes from a blob of %d", n+2, len(b))
		}
	})
}
