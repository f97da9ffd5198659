package dps

import (
	"regexp"
	"strconv"
	"testing"
	"time"
)

func TestNewOperationID(t *testing.T) {
	shape := regexp.MustCompile(`^7\.[0-9a-f]{16}\.[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := NewOperationID(17)
		if !shape.MatchString(id) {
			t.Fatalf("%q is not shaped {node mod 10}.{16 hex}.{uuid v4}", id)
		}
		if seen[id] {
			t.Fatalf("%q issued twice", id)
		}
		seen[id] = true
		// Issued one after another, they sort one after another (the
		// store's index grows at its end); IDs issued in the same
		// nanosecond differ by their UUID only.
		if prev != "" && id[:18] < prev[:18] {
			t.Fatalf("ID %d %q sorts before the one issued before it, %q", i, id, prev)
		}
		prev = id
	}
	// The 16 hex digits are the time of issue.
	before := time.Now().UnixNano()
	id := NewOperationID(0)
	after := time.Now().UnixNano()
	at, err := strconv.ParseInt(id[2:18], 16, 64)
	if err != nil || at < before || at > after {
		t.Errorf("%q carries time %d, not within [%d, %d]", id, at, before, after)
	}
}
