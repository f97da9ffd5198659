package serviceapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The golden files show JSON in the order the server writes it, so the test
// keeps object members in order: an object is a []member, not a map.

type member struct {
	Key   string
	Value any
}

type object []member

// parseOrdered decodes one JSON value, keeping member order. Numbers stay
// json.Number so that they print as sent.
func parseOrdered(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := object{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is %v", kt)
				}
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				obj = append(obj, member{k, v})
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return arr, nil
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return tok, nil
	}
}

// printOrdered renders v with two-space indentation.
func printOrdered(v any) string {
	var sb strings.Builder
	printValue(&sb, v, "")
	return sb.String()
}

func printValue(sb *strings.Builder, v any, indent string) {
	switch t := v.(type) {
	case object:
		printItems(sb, "{", "}", len(t), indent, func(i int) {
			sb.WriteString(jsonString(t[i].Key))
			sb.WriteString(": ")
			printValue(sb, t[i].Value, indent+"  ")
		})
	case []any:
		printItems(sb, "[", "]", len(t), indent, func(i int) { printValue(sb, t[i], indent+"  ") })
	case string:
		sb.WriteString(jsonString(t))
	case json.Number:
		sb.WriteString(t.String())
	case bool:
		fmt.Fprint(sb, t)
	case nil:
		sb.WriteString("null")
	default:
		fmt.Fprintf(sb, "%v", t)
	}
}

// printItems prints the n items of an object or array, one a line.
func printItems(sb *strings.Builder, open, close string, n int, indent string, item func(i int)) {
	if n == 0 {
		sb.WriteString(open + close)
		return
	}
	sb.WriteString(open + "\n")
	for i := range n {
		sb.WriteString(indent + "  ")
		item(i)
		if i < n-1 {
			sb.WriteByte(',')
		}
		sb.WriteByte('\n')
	}
	sb.WriteString(indent + close)
}

// jsonString quotes s as JSON without escaping <, > and &, which the
// messages of the server use.
func jsonString(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(buf.String(), "\n")
}

// get returns the member of obj named key.
func (o object) get(key string) (any, bool) {
	for _, m := range o {
		if m.Key == key {
			return m.Value, true
		}
	}
	return nil, false
}
