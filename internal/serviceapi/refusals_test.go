package serviceapi_test

import (
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// TestRefusalJournal lists the journal as a policy with EnrollmentRead
// alone does: newest first, every field, paged by x-ms-max-item-count and
// x-ms-continuation, filtered by registrationId, errorCode and time.
func TestRefusalJournal(t *testing.T) {
	s := startServer(t)
	s.doJSON("PUT", "/policies/reader", nil, map[string]any{"rights": "EnrollmentRead"}, 200, nil)
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var rs []*store.Refusal
	for i := range 12 {
		rs = append(rs, &store.Refusal{
			Time: base.Add(time.Duration(i) * time.Minute), Transport: "mqtt", Operation: "register",
			RegistrationID: fmt.Sprintf("Dev-%d", i%3), Credential: "SAS token for skn=registration",
			Status: 401, ErrorCode: 401002 + i%2*1000, Reason: fmt.Sprintf("reason %d", i),
			TrackingID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Peer: "192.0.2.1:4000",
		})
	}
	if err := s.Store.AddRefusals(t.Context(), rs); err != nil {
		t.Fatal(err)
	}
	reader := map[string]string{"Authorization": s.token("reader")}

	// list pages through GET /refusals?query with pages of size n.
	list := func(query url.Values, n int) []dps.Refusal {
		t.Helper()
		var all []dps.Refusal
		cont := ""
		for range 20 {
			h := map[string]string{"Authorization": reader["Authorization"], "x-ms-max-item-count": strconv.Itoa(n)}
			if cont != "" {
				h["x-ms-continuation"] = cont
			}
			var page []dps.Refusal
			resp := s.doJSON("GET", "/refusals?"+query.Encode(), h, nil, 200, &page)
			if got := resp.Header.Get("x-ms-item-type"); got != "Refusal" {
				t.Errorf("x-ms-item-type = %q", got)
			}
			all = append(all, page...)
			if cont = resp.Header.Get("x-ms-continuation"); cont == "" {
				return all
			}
		}
		t.Fatal("paging did not end")
		return nil
	}
	reasons := func(es []dps.Refusal) string {
		out := ""
		for _, e := range es {
			out += strconv.Quote(e.Reason) + " "
		}
		return out
	}

	all := list(nil, 5)
	if len(all) != 12 || all[0].Reason != "reason 11" || all[11].Reason != "reason 0" {
		t.Fatalf("GET /refusals: %s, want reason 11 to reason 0", reasons(all))
	}
	want := dps.Refusal{Time: dps.NewTime(base.Add(11 * time.Minute)), Transport: "mqtt", Operation: "register", RegistrationID: "Dev-2",
		Credential: "SAS token for skn=registration", Status: 401, ErrorCode: 402002, Reason: "reason 11",
		TrackingID: "00000000-0000-4000-8000-000000000011", PeerAddress: "192.0.2.1:4000"}
	if fmt.Sprint(all[0]) != fmt.Sprint(want) {
		t.Errorf("newest entry:\n got  %+v\n want %+v", all[0], want)
	}
	for _, tc := range []struct {
		query url.Values
		want  string
	}{
		{url.Values{"registrationId": {"dev-1"}}, `"reason 10" "reason 7" "reason 4" "reason 1" `},
		{url.Values{"errorCode": {"402002"}, "since": {"2025-03-01T12:05:00Z"}}, `"reason 11" "reason 9" "reason 7" "reason 5" `},
		{url.Values{"since": {"2025-03-01T12:02:00Z"}, "until": {"2025-03-01T12:04:00Z"}}, `"reason 3" "reason 2" `},
		{url.Values{"registrationId": {"dev-9"}}, ``},
	} {
		for _, n := range []int{1, 100} {
			if got := reasons(list(tc.query, n)); got != tc.want {
				t.Errorf("GET /refusals?%s (pages of %d): %s, want %s", tc.query.Encode(), n, got, tc.want)
			}
		}
	}
}
