package dps_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dpsd/dpsd/internal/dps"
)

// FuzzCheckJSONText: what CheckJSONText lets through is UTF-8, and its
// strings hold no NUL character.
func FuzzCheckJSONText(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, "{\"a\":\"\xff\"}", `{"a":"\u0000"}`, `{"a":"\\u0000"}`, `["u0000", "\u0000"]`, `{"u0000`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if dps.CheckJSONText(b) != nil {
			return
		}
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			t.Fatalf("%q passed", b)
		}
		var v any
		if json.Unmarshal(b, &v) == nil && strings.Contains(fmt.Sprint(v), "\x00") {
			t.Fatalf("%q passed with a NUL in a string", b)
		}
	})
}
