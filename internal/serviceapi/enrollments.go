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
// and groups share one implementation of every operation.
type kind[T any] struct {
	res      dpserr.Resource
	idField  string // JSON field of the ID
	itemType string // x-ms-item-type of query results
	id       func(*T) string
	setID    func(*T, string)
	etag     func(*T) string
	att      func(*T) *dps.AttestationMechanism
	get      func(context.Context, string) (*T, error)
	put      func(context.Context, *T, string) (*T, error)
	del      func(context.Context, string, string) error
	list     func(context.Context, string, int) (store.Page[*T], error)
	prepare  func(ctx context.Context, v, prev *T) error
	redact   func(*T) *T // for reads
	// decorate adds read-only state to a read (the registration record of
	// an individual enrollment); nil when there is none.
	decorate  func(context.Context, *T) error
	writeView func(*T) *T // for the answer to a write
	bulkError func(id string, e *dpserr.Error) dps.BulkEnrollmentOperationError
}

func (a *API) individuals() *kind[dps.IndividualEnrollment] {
	return &kind[dps.IndividualEnrollment]{
		res: enrollmentResource("enrollment", dpserr.CodeEnrollmentNotFound), idField: "registrationId", itemType: "Enrollment",
		id:    func(e *dps.IndividualEnrollment) string { return e.RegistrationID },
		setID: func(e *dps.IndividualEnrollment, id string) { e.RegistrationID = id },
		etag:  func(e *dps.IndividualEnrollment) string { return e.Etag },
		att:   func(e *dps.IndividualEnrollment) *dps.AttestationMechanism { return e.Attestation },
		get:   a.Store.Enrollment, put: a.Store.PutEnrollment, del: a.Store.DeleteEnrollment, list: a.Store.Enrollments,
		prepare: func(_ context.Context, e, prev *dps.IndividualEnrollment) error {
			return enrollment.PrepareIndividual(e, prev)
		},
		redact: enrollment.RedactIndividual, writeView: enrollment.WriteResponseIndividual,
		decorate: func(ctx context.Context, e *dps.IndividualEnrollment) error {
			reg, err := a.Store.Registration(ctx, e.RegistrationID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return nil
			case err != nil:
				return err
			}
			e.RegistrationState = reg.Result.State()
			return nil
		},
		bulkError: func(id string, e *dpserr.Error) dps.BulkEnrollmentOperationError {
			return dps.BulkEnrollmentOperationError{RegistrationID: id, ErrorCode: e.Code, ErrorStatus: e.Message}
		},
	}
}

func (a *API) groups() *kind[dps.EnrollmentGroup] {
	return &kind[dps.EnrollmentGroup]{
		res: enrollmentResource("enrollment group", dpserr.CodeGroupNotFound), idField: "enrollmentGroupId", itemType: "EnrollmentGroup",
		id:    func(g *dps.EnrollmentGroup) string { return g.EnrollmentGroupID },
		setID: func(g *dps.EnrollmentGroup, id string) { g.EnrollmentGroupID = id },
		etag:  func(g *dps.EnrollmentGroup) string { return g.Etag },
		att:   func(g *dps.EnrollmentGroup) *dps.AttestationMechanism { return g.Attestation },
		get:   a.Store.Group, put: a.Store.PutGroup, del: a.Store.DeleteGroup, list: a.Store.Groups,
		prepare: func(ctx context.Context, g, prev *dps.EnrollmentGroup) error {
			return enrollment.PrepareGroup(ctx, g, prev, a.Store)
		},
		redact: enrollment.RedactGroup, writeView: enrollment.WriteResponseGroup,
		bulkError: func(id string, e *dpserr.Error) dps.BulkEnrollmentOperationError {
			return dps.BulkEnrollmentOperationError{EnrollmentGroupID: id, ErrorCode: e.Code, ErrorStatus: e.Message}
		},
	}
}

func (a *API) getEnrollment(w http.ResponseWriter, r *http.Request, p []string) error {
	return getRecord(a.individuals(), w, r, p[0])
}
func (a *API) putEnrollment(w http.ResponseWriter, r *http.Request, p []string) error {
	return putRecord(a.individuals(), w, r, p[0])
}
func (a *API) deleteEnrollment(w http.ResponseWriter, r *http.Request, p []string) error {
	return deleteRecord(a.individuals(), w, r, p[0])
}
func (a *API) enrollmentAttestation(w http.ResponseWriter, r *http.Request, p []string) error {
	return attestation(a.individuals(), w, r, p[0])
}
func (a *API) queryEnrollments(w http.ResponseWriter, r *http.Request, _ []string) error {
	return query(a.individuals(), w, r)
}
func (a *API) bulkEnrollments(w http.ResponseWriter, r *http.Request, _ []string) error {
	var op dps.BulkEnrollmentOperation
	if err := httpx.DecodeJSON(r, &op, false); err != nil {
		return err
	}
	return bulk(a.individuals(), w, r, op.Mode, op.Enrollments, "enrollments")
}

func (a *API) getGroup(w http.ResponseWriter, r *http.Request, p []string) error {
	return getRecord(a.groups(), w, r, p[0])
}
func (a *API) putGroup(w http.ResponseWriter, r *http.Request, p []string) error {
	return putRecord(a.groups(), w, r, p[0])
}
func (a *API) deleteGroup(w http.ResponseWriter, r *http.Request, p []string) error {
	return deleteRecord(a.groups(), w, r, p[0])
}
func (a *API) groupAttestation(w http.ResponseWriter, r *http.Request, p []string) error {
	return attestation(a.groups(), w, r, p[0])
}
func (a *API) queryGroups(w http.ResponseWriter, r *http.Request, _ []string) error {
	return query(a.groups(), w, r)
}
func (a *API) bulkGroups(w http.ResponseWriter, r *http.Request, _ []string) error {
	var op dps.BulkEnrollmentGroupOperation
	if err := httpx.DecodeJSON(r, &op, false); err != nil {
		return err
	}
	return bulk(a.groups(), w, r, op.Mode, op.EnrollmentGroups, "enrollmentGroups")
}

func getRecord[T any](k *kind[T], w http.ResponseWriter, r *http.Request, id string) error {
	v, err := k.get(r.Context(), id)
	if err != nil {
		return dpserr.FromStore(err, k.res, id)
	}
	out, err := k.read(r.Context(), v)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// read renders a record for a read: secrets hidden, read-only state added.
func (k *kind[T]) read(ctx context.Context, v *T) (*T, error) {
	out := k.redact(v)
	if k.decorate != nil {
		if err := k.decorate(ctx, out); err != nil {
			return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
		}
	}
	return out, nil
}

func putRecord[T any](k *kind[T], w http.ResponseWriter, r *http.Request, id string) error {
	var v T
	if err := httpx.DecodeJSON(r, &v, false); err != nil {
		return err
	}
	stored, err := k.write(r.Context(), &v, id, httpx.IfMatch(r))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, k.writeView(stored))
	return nil
}

// write validates v and stores it under the If-Match precondition ifMatch.
// pathID is the ID the URL names; the body may repeat it.
func (k *kind[T]) write(ctx context.Context, v *T, pathID, ifMatch string) (*T, error) {
	switch bodyID := k.id(v); {
	case bodyID == "":
		k.setID(v, pathID)
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

// enrollmentResource words the store failures of enrollments and groups,
// which can be overwritten unconditionally (If-Match: *).
func enrollmentResource(noun string, notFound int) dpserr.Resource {
	return dpserr.Resource{Noun: noun, NotFound: notFound,
		Exists: noun + " %q already exists; to replace it, send If-Match with its etag (or * to overwrite unconditionally)",
		Stale:  "the If-Match etag does not match " + noun + " %q (it was changed or deleted); read it again and retry"}
}

func deleteRecord[T any](k *kind[T], w http.ResponseWriter, r *http.Request, id string) error {
	if err := k.del(r.Context(), id, httpx.IfMatch(r)); err != nil {
		return dpserr.FromStore(err, k.res, id)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func attestation[T any](k *kind[T], w http.ResponseWriter, r *http.Request, id string) error {
	v, err := k.get(r.Context(), id)
	if err != nil {
		return dpserr.FromStore(err, k.res, id)
	}
	httpx.WriteJSON(w, http.StatusOK, k.att(v))
	return nil
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

func query[T any](k *kind[T], w http.ResponseWriter, r *http.Request) error {
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
	items := make([]*T, len(page.Items))
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
func bulk[T any](k *kind[T], w http.ResponseWriter, r *http.Request, mode string, raw []json.RawMessage, field string) error {
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
		return dpserr.BadRequest("the bulk operation has no %s", field)
	}
	// Azure's limit: scripts tested against dpsd must not break on Azure.
	if len(raw) > dps.MaxBulkItems {
		return dpserr.BadRequest("the bulk operation has %d %s; the limit is %d per request, as in Azure DPS: split it", len(raw), field, dps.MaxBulkItems)
	}
	res := dps.BulkEnrollmentOperationResult{IsSuccessful: true, Errors: []dps.BulkEnrollmentOperationError{}}
	for i, item := range raw {
		var v T
		id := ""
		err := httpx.DecodeBytes(item, &v, false)
		if err == nil {
			id = k.id(&v)
			err = k.bulkItem(r.Context(), m, &v, i)
		}
		if err != nil {
			res.IsSuccessful = false
			res.Errors = append(res.Errors, k.bulkError(id, dpserr.As(err)))
		}
	}
	httpx.WriteJSON(w, http.StatusOK, res)
	return nil
}

func (k *kind[T]) bulkItem(ctx context.Context, mode string, v *T, i int) error {
	id := k.id(v)
	if id == "" {
		return dpserr.BadRequest("item %d has no %s", i, k.idField)
	}
	etag := k.etag(v)
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
