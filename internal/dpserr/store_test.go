package dpserr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/store"
)

func TestFromStore(t *testing.T) {
	groups := dpserr.Resource{Noun: "enrollment group", NotFound: dpserr.CodeGroupNotFound}
	hubs := dpserr.Resource{Noun: "linked IoT hub", NotFound: dpserr.CodeLinkedHubNotFound,
		Missing: "hub %q is not linked", Exists: "IoT hub %q is already linked", Stale: "hub %q changed"}
	// Stores wrap their sentinels with the record they were about.
	wrap := func(err error) error { return fmt.Errorf("group %q: %w", "g-1", err) }
	rule := dpserr.BadRequest("a rule")
	for name, c := range map[string]struct {
		err    error
		res    dpserr.Resource
		status int
		code   int
		msg    string
	}{
		"not found":             {wrap(store.ErrNotFound), groups, 404, dpserr.CodeGroupNotFound, `enrollment group "G-1" not found`},
		"conflict":              {wrap(store.ErrConflict), groups, 409, dpserr.CodeConflict, `enrollment group "G-1" already exists; to replace it, send If-Match with its etag`},
		"stale etag":            {wrap(store.ErrPreconditionFailed), groups, 412, dpserr.CodePreconditionFailed, `the If-Match etag does not match enrollment group "G-1"; read it again and retry`},
		"own wording, missing":  {store.ErrNotFound, hubs, 404, dpserr.CodeLinkedHubNotFound, `hub "G-1" is not linked`},
		"own wording, conflict": {store.ErrConflict, hubs, 409, dpserr.CodeConflict, `IoT hub "G-1" is already linked`},
		"own wording, stale":    {store.ErrPreconditionFailed, hubs, 412, dpserr.CodePreconditionFailed, `hub "G-1" changed`},
		"unavailable":           {wrap(store.ErrUnavailable), groups, 503, dpserr.CodeUnavailable, "service temporarily unavailable; retry later"},
		"deadline":              {context.DeadlineExceeded, dpserr.NoRecord, 503, dpserr.CodeUnavailable, "service temporarily unavailable; retry later"},
		"a rule passes through": {fmt.Errorf("checking: %w", rule), groups, 400, dpserr.CodeInvalidArgument, "a rule"},
		"anything else":         {errors.New("disk on fire"), groups, 500, dpserr.CodeInternal, "internal error; the server log has the details under this trackingId"},
		// Without a record, record failures are the store's or the caller's fault.
		"no record, not found":  {store.ErrNotFound, dpserr.NoRecord, 500, dpserr.CodeInternal, "internal error; the server log has the details under this trackingId"},
		"no record, conflict":   {store.ErrConflict, dpserr.NoRecord, 500, dpserr.CodeInternal, "internal error; the server log has the details under this trackingId"},
		"no record, stale etag": {store.ErrPreconditionFailed, dpserr.NoRecord, 500, dpserr.CodeInternal, "internal error; the server log has the details under this trackingId"},
	} {
		t.Run(name, func(t *testing.T) {
			var e *dpserr.Error
			if !errors.As(dpserr.FromStore(c.err, c.res, "G-1"), &e) {
				t.Fatalf("FromStore returned no *dpserr.Error")
			}
			if e.Status != c.status || e.Code != c.code || e.Message != c.msg {
				t.Errorf("got %d %d %q, want %d %d %q", e.Status, e.Code, e.Message, c.status, c.code, c.msg)
			}
			if c.status >= 500 && !errors.Is(e, c.err) {
				t.Errorf("the cause %v is not kept for the log: %v", c.err, e)
			}
		})
	}
	if err := dpserr.FromStore(nil, groups, "g"); err != nil {
		t.Errorf("FromStore(nil) = %v", err)
	}
}
