package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/store"
)

// The refusal journal: AddRefusals, Refusals, TrimRefusals.

var refusalBase = time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)

// newRefusal is entry i of a journal: one second after entry i-1, with
// every field set.
func newRefusal(i int, regID string, code int) *store.Refusal {
	return &store.Refusal{
		Time:           refusalBase.Add(time.Duration(i) * time.Second),
		Transport:      "https",
		Operation:      "register",
		RegistrationID: regID,
		Credential:     fmt.Sprintf("SAS token for skn=registration (entry %d)", i),
		Status:         code / 1000,
		ErrorCode:      code,
		Reason:         fmt.Sprintf("reason %d", i),
		TrackingID:     fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
		Peer:           "127.0.0.1:5000",
	}
}

// reasons lists the entries' reasons, the order kept.
func reasons(rs []*store.Refusal) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Reason
	}
	return out
}

// allRefusals pages through the entries f selects with pages of size n.
func allRefusals(t *testing.T, s store.Store, f store.RefusalFilter, n int) []*store.Refusal {
	t.Helper()
	var all []*store.Refusal
	after := ""
	for range 1000 {
		p, err := s.Refusals(bg(t), f, after, n)
		must(t, err, "refusals")
		if len(p.Items) > n {
			t.Fatalf("page of %d entries, limit %d", len(p.Items), n)
		}
		all = append(all, p.Items...)
		if p.Next == "" {
			return all
		}
		if len(p.Items) == 0 {
			t.Fatal("an empty page with a next position")
		}
		after = p.Next
	}
	t.Fatal("paging did not end")
	return nil
}

// addRefusals stores entries 0..n-1 of regIDs and codes taken in turn.
func addRefusals(t *testing.T, s store.Store, n int, regIDs []string, codes []int) {
	t.Helper()
	rs := make([]*store.Refusal, n)
	for i := range rs {
		rs[i] = newRefusal(i, regIDs[i%len(regIDs)], codes[i%len(codes)])
	}
	must(t, s.AddRefusals(bg(t), rs), "add refusals")
}

// wantReasons is the reasons of entries idx, newest first.
func wantReasons(idx ...int) []string {
	slices.Sort(idx)
	slices.Reverse(idx)
	out := make([]string, len(idx))
	for i, n := range idx {
		out[i] = fmt.Sprintf("reason %d", n)
	}
	return out
}

// trimmed trims s and checks how many entries went.
func trimmed(t *testing.T, s store.Store, keep int, before time.Time, want int, what string) {
	t.Helper()
	n, err := s.TrimRefusals(bg(t), keep, before)
	must(t, err, what)
	if n != want {
		t.Errorf("%s deleted %d, want %d", what, n, want)
	}
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func testRefusals(t *testing.T, open func(*testing.T) store.Store) {
	t.Run("round-trips every field, newest first, IDs assigned", func(t *testing.T) {
		s := open(t)
		p, err := s.Refusals(bg(t), store.RefusalFilter{}, "", 10)
		must(t, err, "empty journal")
		if len(p.Items) != 0 || p.Next != "" {
			t.Fatalf("empty journal: %d entries, next %q", len(p.Items), p.Next)
		}
		in := []*store.Refusal{newRefusal(1, "Dev-A", 401002), newRefusal(2, "dev-b", 404006)}
		in[1].Transport, in[1].Operation, in[1].Peer = "mqtt-ws", "poll", "[::1]:61000"
		in[0].ID = "ignored"
		must(t, s.AddRefusals(bg(t), in), "add")
		p, err = s.Refusals(bg(t), store.RefusalFilter{}, "", 10)
		must(t, err, "refusals")
		if len(p.Items) != 2 || p.Next != "" {
			t.Fatalf("%d entries, next %q; want 2 and none", len(p.Items), p.Next)
		}
		for i, got := range p.Items {
			want := *in[1-i]
			if got.ID == "" || got.ID == "ignored" {
				t.Errorf("entry %d: ID %q, want one the store assigned", i, got.ID)
			}
			want.ID = got.ID
			if !got.Time.Equal(want.Time) {
				t.Errorf("entry %d: time %v, want %v", i, got.Time, want.Time)
			}
			want.Time = got.Time
			if *got != want {
				t.Errorf("entry %d:\n got  %+v\n want %+v", i, *got, want)
			}
		}
		if p.Items[0].ID == p.Items[1].ID {
			t.Errorf("two entries share the ID %q", p.Items[0].ID)
		}
	})

	t.Run("an entry without a time gets the current time", func(t *testing.T) {
		s := open(t)
		r := newRefusal(0, "dev", 401002)
		r.Time = time.Time{}
		before := time.Now().Add(-time.Minute)
		must(t, s.AddRefusals(bg(t), []*store.Refusal{r}), "add")
		p, err := s.Refusals(bg(t), store.RefusalFilter{}, "", 1)
		must(t, err, "refusals")
		if len(p.Items) != 1 || p.Items[0].Time.Before(before) || p.Items[0].Time.After(time.Now().Add(time.Minute)) {
			t.Fatalf("entries %+v, want one stamped about now", p.Items)
		}
	})

	t.Run("paging", func(t *testing.T) {
		s := open(t)
		addRefusals(t, s, 25, []string{"dev"}, []int{401002})
		for _, n := range []int{1, 7, 10, 25, 100} {
			if got, want := reasons(allRefusals(t, s, store.RefusalFilter{}, n)), wantReasons(span(0, 25)...); !slices.Equal(got, want) {
				t.Fatalf("pages of %d: %q, want %q", n, got, want)
			}
		}
		// Entries of one instant are ordered, and paged, by ID.
		same := make([]*store.Refusal, 5)
		for i := range same {
			same[i] = newRefusal(100, "same", 401002)
			same[i].Reason = fmt.Sprintf("same %d", i)
		}
		must(t, s.AddRefusals(bg(t), same), "add")
		got := allRefusals(t, s, store.RefusalFilter{RegistrationID: "same"}, 2)
		if len(got) != 5 {
			t.Fatalf("%d entries of one instant over pages of 2, want 5: %q", len(got), reasons(got))
		}
		for i := 1; i < len(got); i++ {
			if got[i].ID >= got[i-1].ID {
				t.Fatalf("entries of one instant not in descending ID order: %q then %q", got[i-1].ID, got[i].ID)
			}
		}
	})

	t.Run("a position the store did not return is refused", func(t *testing.T) {
		s := open(t)
		for _, after := range []string{"nonsense", "12.", ".abc", "x.abc"} {
			_, err := s.Refusals(bg(t), store.RefusalFilter{}, after, 10)
			wantErr(t, err, store.ErrBadPosition, fmt.Sprintf("after %q", after))
		}
	})

	t.Run("filters", func(t *testing.T) {
		s := open(t)
		// Entry i: registration dev-(i%3), code 401002 for even i, 404006 for odd.
		addRefusals(t, s, 30, []string{"dev-0", "Dev-1", "dev-2"}, []int{401002, 404006})
		at := func(i int) time.Time { return refusalBase.Add(time.Duration(i) * time.Second) }
		pick := func(keep func(i int) bool) []string {
			var idx []int
			for i := range 30 {
				if keep(i) {
					idx = append(idx, i)
				}
			}
			return wantReasons(idx...)
		}
		for _, tc := range []struct {
			name string
			f    store.RefusalFilter
			want []string
		}{
			{"registration ID, any case", store.RefusalFilter{RegistrationID: "DEV-1"}, pick(func(i int) bool { return i%3 == 1 })},
			{"unknown registration ID", store.RefusalFilter{RegistrationID: "dev-9"}, nil},
			{"error code", store.RefusalFilter{ErrorCode: 404006}, pick(func(i int) bool { return i%2 == 1 })},
			{"since (inclusive)", store.RefusalFilter{Since: at(25)}, pick(func(i int) bool { return i >= 25 })},
			{"until (exclusive)", store.RefusalFilter{Until: at(5)}, pick(func(i int) bool { return i < 5 })},
			{"all of them", store.RefusalFilter{RegistrationID: "dev-0", ErrorCode: 401002, Since: at(6), Until: at(24)},
				pick(func(i int) bool { return i%3 == 0 && i%2 == 0 && i >= 6 && i < 24 })},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, n := range []int{2, 100} {
					if got := reasons(allRefusals(t, s, tc.f, n)); !slices.Equal(got, tc.want) {
						t.Fatalf("pages of %d: %q, want %q", n, got, tc.want)
					}
				}
			})
		}
	})

	t.Run("trim by age, then by count, oldest first", func(t *testing.T) {
		s := open(t)
		addRefusals(t, s, 20, []string{"dev"}, []int{401002})
		trimmed(t, s, 0, refusalBase.Add(5*time.Second), 5, "trim by age")
		if got, want := reasons(allRefusals(t, s, store.RefusalFilter{}, 100)), wantReasons(span(5, 20)...); !slices.Equal(got, want) {
			t.Fatalf("after trimming by age: %q, want %q", got, want)
		}
		trimmed(t, s, 4, time.Time{}, 11, "trim by count")
		if got, want := reasons(allRefusals(t, s, store.RefusalFilter{}, 100)), wantReasons(span(16, 20)...); !slices.Equal(got, want) {
			t.Fatalf("after trimming to 4: %q, want %q", got, want)
		}
		trimmed(t, s, 4, refusalBase, 0, "trim within bounds")
		// Both bounds at once; entries of one instant go in listing order.
		same := make([]*store.Refusal, 6)
		for i := range same {
			same[i] = newRefusal(50, "same", 401002)
			same[i].Reason = fmt.Sprintf("same %d", i)
		}
		must(t, s.AddRefusals(bg(t), same), "add")
		listed := allRefusals(t, s, store.RefusalFilter{}, 100)
		trimmed(t, s, 3, refusalBase.Add(17*time.Second), 7, "trim by both")
		if got, want := reasons(allRefusals(t, s, store.RefusalFilter{}, 100)), reasons(listed[:3]); !slices.Equal(got, want) {
			t.Fatalf("after trimming to 3: %q, want the 3 newest %q", got, want)
		}
	})

	t.Run("trim beyond one batch", func(t *testing.T) {
		s := open(t)
		addRefusals(t, s, 2600, []string{"dev"}, []int{401002})
		trimmed(t, s, 0, refusalBase.Add(2300*time.Second), 2300, "trim by age")
		trimmed(t, s, 10, time.Time{}, 290, "trim by count")
		if got, want := reasons(allRefusals(t, s, store.RefusalFilter{}, 100)), wantReasons(span(2590, 2600)...); !slices.Equal(got, want) {
			t.Fatalf("after trimming: %q, want %q", got, want)
		}
	})
}
