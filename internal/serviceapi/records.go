package serviceapi

import (
	"context"
	"net/http"

	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
)

// The operations that differ only in their record: read one, list all,
// delete one. The route table builds their handlers once.

type handler = func(w http.ResponseWriter, r *http.Request, p []string) error

// getOne answers a GET of the record the path names, as view renders it.
func getOne[T, V any](res dpserr.Resource, read func(context.Context, string) (T, error), view func(T) V) handler {
	return func(w http.ResponseWriter, r *http.Request, p []string) error {
		v, err := read(r.Context(), p[0])
		if err != nil {
			return dpserr.FromStore(err, res, p[0])
		}
		httpx.WriteJSON(w, http.StatusOK, view(v))
		return nil
	}
}

// listAll answers a GET of every record, in ARM's shape {"value": [...]}.
func listAll[T, V any](list func(context.Context) ([]T, error), view func(T) V) handler {
	return func(w http.ResponseWriter, r *http.Request, _ []string) error {
		vs, err := list(r.Context())
		if err != nil {
			return dpserr.FromStore(err, dpserr.NoRecord, "")
		}
		out := struct {
			Value []V `json:"value"`
		}{Value: make([]V, 0, len(vs))}
		for _, v := range vs {
			out.Value = append(out.Value, view(v))
		}
		httpx.WriteJSON(w, http.StatusOK, out)
		return nil
	}
}

// deleteOne answers a DELETE of the record the path names, under the
// request's If-Match.
func deleteOne(res dpserr.Resource, remove func(ctx context.Context, id, ifMatch string) error) handler {
	return func(w http.ResponseWriter, r *http.Request, p []string) error {
		if err := remove(r.Context(), p[0], httpx.IfMatch(r)); err != nil {
			return dpserr.FromStore(err, res, p[0])
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}
