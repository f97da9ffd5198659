package dps

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// CheckJSONText reports JSON text dpsd does not store: bytes that are not
// UTF-8, and the NUL character, raw or escaped (\u0000) in a string. Both
// ends check it: the APIs refuse such a body with a 400, and `dpsd import`
// such a line, since PostgreSQL cannot store either.
func CheckJSONText(b []byte) error {
	if !utf8.Valid(b) {
		i := 0
		for i < len(b) {
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			i += n
		}
		return fmt.Errorf("it is not UTF-8 (the byte at offset %d is %#02x); JSON text is UTF-8", i, b[i])
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return errors.New("it holds the NUL character, which dpsd does not store")
	}
	if !bytes.Contains(b, []byte(`u0000`)) {
		return nil
	}
	// The escape may be inside a string, or only look like one (\\u0000
	// is a backslash and "u0000"): decode the strings to know.
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // not JSON: the decoder that follows says why
		}
		if s, ok := tok.(string); ok && strings.IndexByte(s, 0) >= 0 {
			return errors.New(`a string holds the NUL character (\u0000), which dpsd does not store`)
		}
	}
}
