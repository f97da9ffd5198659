package serviceapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/store"
)

// The refusal journal (a dpsd extension): GET /refusals lists the entries
// newest first, paged like the queries (x-ms-max-item-count,
// x-ms-continuation), filtered by the query parameters registrationId,
// errorCode, since (inclusive) and until (exclusive; RFC 3339 times).

// RefusalFilter reads the journal's filters from the query of r. Its
// errors are the API's 400s.
func RefusalFilter(r *http.Request) (store.RefusalFilter, error) {
	var f store.RefusalFilter
	q := r.URL.Query()
	if id := strings.TrimSpace(q.Get("registrationId")); id != "" {
		// Not validated as an ID: the journal keeps the invalid IDs devices
		// were refused for, too.
		if len(id) > 256 {
			return f, dpserr.BadRequest("registrationId is %d characters long; the journal keeps IDs of at most 256", len(id))
		}
		f.RegistrationID = id
	}
	if c := strings.TrimSpace(q.Get("errorCode")); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 100000 || n > 999999 {
			return f, dpserr.BadRequest("errorCode %q is not a six-digit DPS error code such as 401002", c)
		}
		f.ErrorCode = n
	}
	for _, p := range []struct {
		name string
		t    *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v := strings.TrimSpace(q.Get(p.name))
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return f, dpserr.BadRequest("%s %q is not an RFC 3339 time such as 2025-01-31T12:00:00Z", p.name, v)
		}
		*p.t = t
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, dpserr.BadRequest("since %s is not before until %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	}
	return f, nil
}

// RefusalView renders a journal entry for the service API.
func RefusalView(r *store.Refusal) *dps.Refusal {
	return &dps.Refusal{
		Time: dps.NewTime(r.Time), Transport: r.Transport, Operation: r.Operation, RegistrationID: r.RegistrationID,
		Credential: r.Credential, Status: r.Status, ErrorCode: r.ErrorCode, Reason: r.Reason,
		TrackingID: r.TrackingID, PeerAddress: r.Peer,
	}
}

func (a *API) listRefusals(w http.ResponseWriter, r *http.Request, _ []string) error {
	f, err := RefusalFilter(r)
	if err != nil {
		return err
	}
	pr, err := readPaging(r)
	if err != nil {
		return err
	}
	page, err := a.Store.Refusals(r.Context(), f, pr.after, pr.size)
	if errors.Is(err, store.ErrBadPosition) {
		return dpserr.BadRequest("x-ms-continuation is not a token this server issued")
	}
	if err != nil {
		return dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	items := make([]*dps.Refusal, len(page.Items))
	for i, e := range page.Items {
		items[i] = RefusalView(e)
	}
	writePage(w, "Refusal", pr, items, page.Next)
	return nil
}
