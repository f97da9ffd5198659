package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dpsd/dpsd/internal/store"
)

// Run-time settings (store.RuntimeSetting).

var runtimeT = newTable("runtime_settings", "name", "doc")

const qRuntimeSetting = `SELECT name, doc, etag, created, updated FROM runtime_settings WHERE key = $1`

func scanRuntimeSetting(sc scanner) (*store.RuntimeSetting, error) {
	var r store.RuntimeSetting
	var m meta
	if err := sc.Scan(&r.Name, &r.Doc, &m.etag, &m.created, &m.updated); err != nil {
		return nil, err
	}
	r.Etag, r.Created, r.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
	return &r, nil
}

// RuntimeSetting returns a run-time setting.
func (s *Store) RuntimeSetting(ctx context.Context, name string) (*store.RuntimeSetting, error) {
	return run(ctx, s, read, func(ctx context.Context) (*store.RuntimeSetting, error) {
		return one(ctx, s, fmt.Sprintf("run-time setting %q", name), s.r.QueryRowContext(ctx, qRuntimeSetting, key(name)), scanRuntimeSetting)
	})
}

// PutRuntimeSetting writes a run-time setting per ifMatch and returns it as
// stored.
func (s *Store) PutRuntimeSetting(ctx context.Context, r *store.RuntimeSetting, ifMatch string) (*store.RuntimeSetting, error) {
	return run(ctx, s, write, func(ctx context.Context) (*store.RuntimeSetting, error) {
		if r == nil || r.Name == "" {
			return nil, errors.New("run-time setting: the name is empty")
		}
		m, err := s.put(ctx, s.w, runtimeT, fmt.Sprintf("run-time setting %q", r.Name), key(r.Name), []any{r.Name, r.Doc}, ifMatch, newEtag)
		if err != nil {
			return nil, err
		}
		out := *r
		out.Etag, out.Created, out.Updated = quoted(m.etag), fromNanos(m.created), fromNanos(m.updated)
		return &out, nil
	})
}

// DeleteRuntimeSetting deletes a run-time setting per ifMatch.
func (s *Store) DeleteRuntimeSetting(ctx context.Context, name, ifMatch string) error {
	return run0(ctx, s, write, func(ctx context.Context) error {
		return s.remove(ctx, s.w, runtimeT, fmt.Sprintf("run-time setting %q", name), key(name), ifMatch)
	})
}
