package dps

import (
	"strings"
	"time"
)

// Time is a UTC instant rendered the way DPS renders it: seven fractional
// digits and a literal Z, e.g. 2022-08-31T22:02:50.5163352Z.
type Time struct{ time.Time }

const timeLayout = "2006-01-02T15:04:05.0000000Z"

// NewTime returns t in UTC truncated to the 100 ns resolution DPS prints.
func NewTime(t time.Time) *Time { return &Time{t.UTC().Truncate(100 * time.Nanosecond)} }

// Format renders t in the DPS layout.
func (t Time) Format() string { return t.UTC().Format(timeLayout) }

func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(timeLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, timeLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON accepts any RFC 3339 time; clients echo back what they read.
func (t *Time) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v.UTC()
	return nil
}
