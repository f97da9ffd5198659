package dpserr

import (
	"context"
	"errors"
	"fmt"

	"github.com/dpsd/dpsd/internal/store"
)

// Resource names a kind of stored record, so that FromStore answers a store
// failure about one record in that record's words.
type Resource struct {
	Noun     string // how messages name the record: "enrollment group"
	NotFound int    // errorCode when the record does not exist
	// Wording where a kind of record needs more than the plain sentence.
	// Each is a format whose one verb, %q, is the record's ID; empty means:
	//   Missing  `<Noun> %q not found`
	//   Exists   `<Noun> %q already exists; to replace it, send If-Match with its etag`
	//   Stale    `the If-Match etag does not match <Noun> %q; read it again and retry`
	Missing, Exists, Stale string
}

// NoRecord is the Resource of a store call that concerns no one record (a
// list, the instance), or whose caller has already handled what not found,
// conflict and a stale etag mean for it.
var NoRecord = Resource{}

// FromStore maps the error of a store call to the error to answer:
//
//	an *Error                    itself: a rule the call checked
//	store.ErrUnavailable         503, retry later (so does an expired deadline)
//	store.ErrNotFound            404 with r.NotFound
//	store.ErrConflict            409: the record exists
//	store.ErrPreconditionFailed  412: the If-Match etag is stale
//	anything else                500
//
// For NoRecord the last three are 500 too: the store broke its contract or
// the caller missed a case, and nobody should be told that a record is
// missing or stale when none was asked for. id is the record's ID as the
// request named it. FromStore(nil, ...) is nil.
func FromStore(err error, r Resource, id string) error {
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return Unavailable(err)
	case r.Noun == "":
		return Internal(err)
	case errors.Is(err, store.ErrNotFound):
		return NotFound(r.NotFound, "%s", r.say(r.Missing, "%s %q not found", id))
	case errors.Is(err, store.ErrConflict):
		return Conflict("%s", r.say(r.Exists, "%s %q already exists; to replace it, send If-Match with its etag", id))
	case errors.Is(err, store.ErrPreconditionFailed):
		return PreconditionFailed("%s", r.say(r.Stale, "the If-Match etag does not match %s %q; read it again and retry", id))
	}
	return Internal(err)
}

// say renders the record's own wording, or else the plain sentence, which
// names the noun first and then the ID.
func (r Resource) say(own, plain, id string) string {
	if own != "" {
		return fmt.Sprintf(own, id)
	}
	return fmt.Sprintf(plain, r.Noun, id)
}
