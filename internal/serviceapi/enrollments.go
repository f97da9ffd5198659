package serviceapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/enrollment"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/store"
)

// kind describes one enrollment record type, so that individual enrollments
// and groups share one implementation of every operation. T is the model, P
// a pointer to it.
type kind[T any, P dps.EnrollmentPtr[T]] struct {
	res       dpserr.Resource
	idField   string // JSON member of the ID
	itemType  string // x-ms-item-type of query results
	bulkField string // JSON member of a bulk operation's items
	get       func(context.Context, string) (P, error)
	put       func(context.Context, P, string) (P, error)
	del       func(context.Context, string, string) error
	list      func(context.Context, string, int) (store.Page[P], error)
	prepare   func(ctx context.Context, v, prev P) error
	// decorate adds read-only state to a read (the registration record of
	// an individual enrollment); nil when there is none.
	decorate func(context.Context, P) error
	// bulkOp decodes a bulk operation: its mode and its items.
	bulkOp    func(*http.Request) (string, []json.RawMessage, error)
	bulkError func(id string, e *dpserr.Error) dps.BulkEnrollmentOperationError
}

type (
	individuals = kind[dps.IndividualEnrollment, *dps.IndividualEnrollment]
	groups      = kind[dps.EnrollmentGroup, *dps.EnrollmentGroup]
)

func newIndividuals(st store.Store) *individuals {
	return &individuals{
		res: enrollmentResource("enrollment", dpserr.CodeEnrollmentNotFound), idField: "registrationId", itemType: "Enrollment", bulkField: "enrollments",
		get: st.Enrollment, put: st.PutEnrollment, del: st.DeleteEnrollment, list: st.Enrollments,
		prepare: func(ctx context.Context, e, prev *dps.IndividualEnrollment) error {
			if err := enrollment.PrepareIndividual(e, prev); err != nil {
				return err
			}
			return enrollment.CheckIssuingCA(ctx, e.Settings(), st)
		},
		decorate: func(ctx context.Context, e *dps.IndividualEnrollment) error {
			reg, err := st.Registration(ctx, e.RegistrationID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return nil
			case err != nil:
				return err
			}
			e.RegistrationState = registrationState(reg)
			return nil
		},
		bulkOp: func(r *http.Request) (string, []json.RawMessage, error) {
			var op dps.BulkEnrollmentOperation
			err := httpx.DecodeJSON(r, &op, false)
			return op.Mode, op.Enrollments, err
		},
		bulkError: func(id string, e *dpserr.Error) dps.BulkEnrollmentOperationError {
			return dps.BulkEnrollmentOperationError{RegistrationID: id, ErrorCode: e.Code, ErrorStatus: e.Message}
		},
	}
}

func newGroups(st store.Store) *groups {
	return &groups{
		res: enrollmentResource("enrollment group", dpserr.CodeGroupNotFound), idField: "enrollmentGroupId", itemType: "EnrollmentGroup", bulkField: "enrollmentGroups",
		get: st.Group, put: st.PutGroup, del: st.DeleteGroup, list: st.Groups,
		prepare: func(ctx context.Context, g, prev *dps.EnrollmentGroup) error {
			if err := enrollment.PrepareGroup(ctx, g, prev, st); err != nil {
				return err
			}
			return enrollment.CheckIssuingCA(ctx, g.Settings(), st)
		},
		bulkOp: func(r *http.Request) (string, []json.RawMessage, error) {
			var op dps.BulkEnrollmentGroupOperation
			err := httpx.DecodeJSON(r, &op, false)
			return op.Mode, op.EnrollmentGroups, err
		},
		bulkError: func(id string, e *dpserr.Error) dps.BulkEnrollmentOperationError {
			return dps.BulkEnrollmentOperationError{EnrollmentGroupID: id, ErrorCode: e.Code, ErrorStatus: e.Message}
		},
	}
}

// attestationOf is the answer of the attestation mechanism call: keys and
// certificates included, as the enrollment was written.
func attestationOf[P dps.Enrollment](e P) *dps.AttestationMechanism { return e.Settings().Attestation }

// enrollmentResource words the store failures of enrollments and groups,
// which can be overwritten unconditionally (If-Match: *).
func enrollmentResource(noun string, notFound int) dpserr.Resource {
	return dpserr.Resource{Noun: noun, NotFound: notFound,
		Exists: noun + " %q already exists; to replace it, send If-Match with its etag (or * to overwrite unconditionally)",
		Stale:  "the If-Match etag does not match " + noun + " %q (it was changed or deleted); read it again and retry"}
}

func (k *kind[T, P]) getRecord(w http.ResponseWriter, r *http.Request, p []string) error {
	v, err := k.get(r.Context(), p[0])
	if err != nil {
		return dpserr.FromStore(err, k.res, p[0])
	}
	out, err := k.read(r.Context(), v)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// read renders a record for a read: secrets hidden, read-only state added.
func (k *kind[T, P]) read(ctx context.Context, v P) (P, error) {
	out := enrollment.Redact(v)
	if k.decorate != nil {
		if err := k.decorate(ctx, out); err != nil {
			return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
		}
	}
	return out, nil
}

func (k *kind[T, P]) putRecord(w http.ResponseWriter, r *http.Request, p []string) error {
	v := P(new(T))
	if err := httpx.DecodeJSON(r, v, false); err != nil {
		return err
	}
	stored, err := k.write(r.Context(), v, p[0], httpx.IfMatch(r))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, enrollment.WriteView(stored))
	return nil
}

// write validates v and stores it under the If-Match precondition ifMatch.
// pathID is the ID the URL names; the body may repeat it.
func (k *kind[T, P]) write(ctx context.Context, v P, pathID, ifMatch string) (P, error) {
	switch bodyID := v.ID(); {
	case bodyID == "":
		v.SetID(pathID)
	case !strings.EqualFold(bodyID, pathID):
		return nil, dpserr.BadRequest("%s %q in the body does not match %q in the URL", k.idField, bodyID, pathID)
	}
	prev, err := k.get(ctx, pathID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		prev = nil
	case err != nil:
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	case ifMatch == "":
		// What the store would answer, said before the body is checked.
		return nil, dpserr.FromStore(store.ErrConflict, k.res, pathID)
	}
	if err := k.prepare(ctx, v, prev); err != nil {
		return nil, err
	}
	stored, err := k.put(ctx, v, ifMatch)
	if err != nil {
		return nil, dpserr.FromStore(err, k.res, pathID)
	}
	return stored, nil
}

// Paging of queries: x-ms-max-item-count sets the page size, and the
// continuation token is the opaque position after the page. The last page has
// no x-ms-continuation header: C# keeps paging while the header is present.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

type pageRequest struct {
	after string
	size  int
	echo  string // x-ms-max-item-count as sent
}

func readPaging(r *http.Request) (pageRequest, error) {
	pr := pageRequest{size: defaultPageSize}
	if s := strings.TrimSpace(r.Header.Get("x-ms-max-item-count")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return pr, dpserr.BadRequest("x-ms-max-item-count %q is not a non-negative integer", s)
		}
		if n > 0 {
			pr.size = min(n, maxPageSize)
		}
		pr.echo = s
	}
	if c := strings.TrimSpace(r.Header.Get("x-ms-continuation")); c != "" {
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			return pr, dpserr.BadRequest("x-ms-continuation is not a token this server issued")
		}
		pr.after = string(b)
	}
	return pr, nil
}

func writePage[T any](w http.ResponseWriter, itemType string, pr pageRequest, items []T, next string) {
	h := w.Header()
	h.Set("x-ms-item-type", itemType)
	if pr.echo != "" {
		h.Set("x-ms-max-item-count", pr.echo)
	}
	if next != "" {
		h.Set("x-ms-continuation", base64.RawURLEncoding.EncodeToString([]byte(next)))
	}
	if items == nil {
		items = []T{}
	}
	httpx.WriteJSON(w, http.StatusOK, items)
}

// checkQuery accepts the queries Azure's SDKs send (SELECT * FROM ..., or
// "*"). Azure has no filters either; a WHERE clause is refused rather than
// silently ignored.
func checkQuery(r *http.Request) error {
	var q dps.QuerySpecification
	if err := httpx.DecodeJSON(r, &q, true); err != nil {
		return err
	}
	if strings.Contains(strings.ToLower(q.Query), "where") {
		return dpserr.BadRequest("query %q: dpsd supports SELECT * only, like Azure DPS; filter the results on the client", q.Query)
	}
	return nil
}

func (k *kind[T, P]) query(w http.ResponseWriter, r *http.Request, _ []string) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	pr, err := readPaging(r)
	if err != nil {
		return err
	}
	page, err := k.list(r.Context(), pr.after, pr.size)
	if err != nil {
		return dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	items := make([]P, len(page.Items))
	for i, v := range page.Items {
		if items[i], err = k.read(r.Context(), v); err != nil {
			return err
		}
	}
	writePage(w, k.itemType, pr, items, page.Next)
	return nil
}

// bulk runs one operation per item; an item's failure does not stop the others
// and is reported in the result, as Azure does.
func (k *kind[T, P]) bulk(w http.ResponseWriter, r *http.Request, _ []string) error {
	mode, raw, err := k.bulkOp(r)
	if err != nil {
		return err
	}
	var m string
	for _, c := range []string{dps.BulkCreate, dps.BulkUpdate, dps.BulkUpdateIfMatchETag, dps.BulkDelete} {
		if strings.EqualFold(mode, c) {
			m = c
		}
	}
	if m == "" {
		return dpserr.BadRequest("bulk mode %q is not one of create, update, updateIfMatchETag, delete", mode)
	}
	if len(raw) == 0 {
		return dpserr.BadRequest("the bulk operation has no %s", k.bulkField)
	}
	// Azure's limit: scripts tested against dpsd must not break on Azure.
	if len(raw) > dps.MaxBulkItems {
		return dpserr.BadRequest("the bulk operation has %d %s; the limit is %d per request, as in Azure DPS: split it", len(raw), k.bulkField, dps.MaxBulkItems)
	}
	res := dps.BulkEnrollmentOperationResult{IsSuccessful: true, Errors: []dps.BulkEnrollmentOperationError{}}
	for i, item := range raw {
		v := P(new(T))
		id := ""
		err := httpx.DecodeBytes(item, v, false)
		if err == nil {
			id = v.ID()
			err = k.bulkItem(r.Context(), m, v, i)
		}
		if err != nil {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, k.bulkError(id, dpserr.As(err)))
		}
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (k *kind[T, P]) bulkItem(ctx context.Context, mode string, v P, i int) error {
	id := v.ID()
	if id == "" {
		return dpserr.BadRequest("item %d has no %s", i, k.idField)
	}
	etag := v.Settings().Etag
	switch mode {
	case dps.BulkDelete:
		if err := k.del(ctx, id, etag); err != nil {
			return dpserr.FromStore(err, k.res, id)
		}
		return nil
	case dps.BulkCreate:
		_, err := k.write(ctx, v, id, "")
		return err
	case dps.BulkUpdate:
		_, err := k.write(ctx, v, id, "*")
		return err
	default:
		if etag == "" || etag == "*" {
			return dpserr.BadRequest("item %d (%q) has no etag, which mode updateIfMatchETag requires", i, id)
		}
		_, err := k.write(ctx, v, id, etag)
		return err
	}
}
