// Package cache keeps in memory, in front of a store.Store, what
// registration decisions read and rarely changes: the instance, the linked
// hubs, the CA certificates and the enrollment groups, as the lookups of
// attestation and allocation ask for them (groups by signing certificate
// and by CA, CA certificates by thumbprint and by subject, the
// symmetric-key groups). A registration then reads the database for what
// is its own — its enrollment, its record — and for one small row, the
// configuration version (store.Store.ConfigVersion), which every write of
// those records changes in its transaction.
//
// Freshness. Sync reads the version; when it is not the one the cached
// records were read under, they are dropped, and the next lookups read the
// database again. The provisioning pipeline calls Sync when a device request
// arrives and when a job runs, so that a decision sees every write committed
// before then, through whichever node or process (dpsd nodes on PostgreSQL,
// `dpsd import` on the same SQLite file). Concurrent Syncs share reads: a
// Sync waits for a read that began after it was called, never for an older
// one, so a busy node reads the version far less often than once per
// request, and never answers from records older than the request.
//
// Between Syncs the cache serves what it holds. Callers that need no
// freshness guarantee (the service API) use the store itself.
//
// Like the store's, the records it returns are the caller's own copies: a
// caller that changes one changes nothing the cache holds.
//
// Memory. A device can present any certificate, and each made-up one is a
// lookup whose answer (none) is kept: the keyed lookups of a generation are
// bounded (MaxEntries), and kept by a key of bounded size (a subject by its
// SHA-256).
package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// DefaultMaxEntries bounds the keyed lookups a generation keeps (groups
// by ID, by signing certificate and by CA, CA certificates by thumbprint
// and by subject): a device can present any certificate, and each one it
// makes up is a lookup. Past the bound, an entry is dropped for each one
// added.
const DefaultMaxEntries = 100_000

// Cache is a store.Store whose hot lookups are served from memory; every
// other call goes to the store it wraps. It is safe for concurrent use.
type Cache struct {
	store.Store
	// MaxEntries overrides DefaultMaxEntries when positive.
	MaxEntries int

	gen atomic.Pointer[generation]

	mu      sync.Mutex
	running *round // the version read in flight
	waiting *round // the read that starts when running ends
}

// New returns a cache in front of s. It holds nothing until the first Sync;
// until then every call goes to s.
func New(s store.Store) *Cache { return &Cache{Store: s} }

// generation is what the cache holds for one configuration version.
type generation struct {
	version int64

	mu        sync.Mutex
	instance  kept[*store.Instance]
	hubs      kept[[]*store.LinkedHub]
	symGroups kept[[]*dps.EnrollmentGroup]
	// Keyed lookups; entries counts them across the maps.
	groups           map[string]*dps.EnrollmentGroup   // by lower-case ID; nil: none
	bySigningCert    map[string][]*dps.EnrollmentGroup // by thumbprint
	byCA             map[string][]*dps.EnrollmentGroup // by lower-case CA name
	casByThumbprint  map[string][]*store.CACertificate
	casBySubject     map[string][]*store.CACertificate // by subjectKey
	signingBySubject map[string][][]byte               // by subjectKey
	entries          int
}

func newGeneration(v int64) *generation {
	return &generation{
		version:          v,
		groups:           map[string]*dps.EnrollmentGroup{},
		bySigningCert:    map[string][]*dps.EnrollmentGroup{},
		byCA:             map[string][]*dps.EnrollmentGroup{},
		casByThumbprint:  map[string][]*store.CACertificate{},
		casBySubject:     map[string][]*store.CACertificate{},
		signingBySubject: map[string][][]byte{},
	}
}

// kept is a lookup without a key, once read.
type kept[V any] struct {
	v  V
	ok bool
}

// round is one read of the version, shared by the Syncs that wait for it.
type round struct {
	done    chan struct{}
	err     error
	waiters int // Syncs waiting for it
}

// Sync makes the cache reflect every write committed before it was called:
// it waits for a read of the configuration version that began after the
// call, and drops what the cache holds if the version changed. It fails
// when the version cannot be read, or ctx ends first.
//
// With no read in flight, the caller reads the version itself. Otherwise
// it waits for the next read, which begins when the one in flight ends and
// serves every Sync called meanwhile.
func (c *Cache) Sync(ctx context.Context) error {
	c.mu.Lock()
	if c.running == nil {
		r := &round{done: make(chan struct{})}
		c.running = r
		c.mu.Unlock()
		// No other Sync waits for this read: they wait for the next.
		c.read(ctx, r)
		return r.err
	}
	if c.waiting == nil {
		c.waiting = &round{done: make(chan struct{})}
	}
	r := c.waiting
	r.waiters++
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// read reads the version for round r, then starts the round that waited
// for it, if any. That round serves several callers, so it is bounded by
// the store's own timeout rather than by the context of one of them.
func (c *Cache) read(ctx context.Context, r *round) {
	v, err := c.Store.ConfigVersion(ctx)
	if err == nil {
		c.install(v)
	}
	r.err = err
	close(r.done)
	c.mu.Lock()
	next := c.waiting
	c.running, c.waiting = next, nil
	c.mu.Unlock()
	if next != nil {
		go c.read(context.Background(), next)
	}
}

// install makes v the current version: a generation of its own, empty, if
// the current one is of another version. Versions are compared for
// equality only; the records of a generation are always read after the
// version that names it, so they are never older than it.
func (c *Cache) install(v int64) {
	for {
		g := c.gen.Load()
		if g != nil && g.version == v {
			return
		}
		if c.gen.CompareAndSwap(g, newGeneration(v)) {
			return
		}
	}
}

func (c *Cache) maxEntries() int {
	if c.MaxEntries > 0 {
		return c.MaxEntries
	}
	return DefaultMaxEntries
}

// keyed serves a keyed lookup from m (a map of the current generation),
// or reads it with load and keeps it; the caller gets a copy.
func keyed[V any](c *Cache, ctx context.Context, m func(*generation) map[string]V, k string, load func(context.Context) (V, error), copy func(V) V) (V, error) {
	g := c.gen.Load()
	if g == nil {
		return load(ctx)
	}
	g.mu.Lock()
	v, ok := m(g)[k]
	g.mu.Unlock()
	if ok {
		return copy(v), nil
	}
	v, err := load(ctx)
	if err != nil {
		return v, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	mm := m(g)
	if _, ok := mm[k]; !ok {
		if g.entries >= c.maxEntries() && g.evictOne() {
			g.entries--
		}
		mm[k] = v
		g.entries++
	}
	return copy(v), nil
}

// held serves a lookup without a key from h (a field of the current
// generation), or reads it with load and keeps it; the caller gets a copy.
func held[V any](c *Cache, ctx context.Context, h func(*generation) *kept[V], load func(context.Context) (V, error), copy func(V) V) (V, error) {
	g := c.gen.Load()
	if g == nil {
		return load(ctx)
	}
	g.mu.Lock()
	k := *h(g)
	g.mu.Unlock()
	if k.ok {
		return copy(k.v), nil
	}
	v, err := load(ctx)
	if err != nil {
		return v, err
	}
	g.mu.Lock()
	*h(g) = kept[V]{v, true}
	g.mu.Unlock()
	return copy(v), nil
}

// evictOne drops one keyed entry, any.
func (g *generation) evictOne() bool {
	return evict(g.casByThumbprint) || evict(g.bySigningCert) || evict(g.casBySubject) ||
		evict(g.signingBySubject) || evict(g.byCA) || evict(g.groups)
}

func evict[V any](m map[string]V) bool {
	for k := range m {
		delete(m, k)
		return true
	}
	return false
}

// Instance returns the instance.
func (c *Cache) Instance(ctx context.Context) (*store.Instance, error) {
	return held(c, ctx, func(g *generation) *kept[*store.Instance] { return &g.instance }, c.Store.Instance, cloneInstance)
}

// LinkedHubs returns every linked hub.
func (c *Cache) LinkedHubs(ctx context.Context) ([]*store.LinkedHub, error) {
	return held(c, ctx, func(g *generation) *kept[[]*store.LinkedHub] { return &g.hubs }, c.Store.LinkedHubs, cloneAll(cloneHub))
}

// SymmetricKeyGroups returns every group with symmetric-key attestation.
func (c *Cache) SymmetricKeyGroups(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
	return held(c, ctx, func(g *generation) *kept[[]*dps.EnrollmentGroup] { return &g.symGroups }, c.Store.SymmetricKeyGroups, cloneAll(cloneGroup))
}

// Group returns an enrollment group; that there is none is kept too.
func (c *Cache) Group(ctx context.Context, groupID string) (*dps.EnrollmentGroup, error) {
	g, err := keyed(c, ctx, func(g *generation) map[string]*dps.EnrollmentGroup { return g.groups }, strings.ToLower(groupID),
		func(ctx context.Context) (*dps.EnrollmentGroup, error) {
			g, err := c.Store.Group(ctx, groupID)
			if errors.Is(err, store.ErrNotFound) {
				return nil, nil
			}
			return g, err
		}, cloneGroup)
	if err == nil && g == nil {
		// The store's own words for it.
		return nil, fmt.Errorf("enrollment group %q: %w", groupID, store.ErrNotFound)
	}
	return g, err
}

// GroupsBySigningCert returns the groups of a signing certificate.
func (c *Cache) GroupsBySigningCert(ctx context.Context, sha256Thumbprint string) ([]*dps.EnrollmentGroup, error) {
	return keyed(c, ctx, func(g *generation) map[string][]*dps.EnrollmentGroup { return g.bySigningCert }, sha256Thumbprint,
		func(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
			return c.Store.GroupsBySigningCert(ctx, sha256Thumbprint)
		},
		cloneAll(cloneGroup))
}

// GroupsByCA returns the groups that reference a CA.
func (c *Cache) GroupsByCA(ctx context.Context, caName string) ([]*dps.EnrollmentGroup, error) {
	return keyed(c, ctx, func(g *generation) map[string][]*dps.EnrollmentGroup { return g.byCA }, strings.ToLower(caName),
		func(ctx context.Context) ([]*dps.EnrollmentGroup, error) { return c.Store.GroupsByCA(ctx, caName) },
		cloneAll(cloneGroup))
}

// CACertificatesByThumbprint returns the CA certificates of a thumbprint.
func (c *Cache) CACertificatesByThumbprint(ctx context.Context, sha256Thumbprint string) ([]*store.CACertificate, error) {
	return keyed(c, ctx, func(g *generation) map[string][]*store.CACertificate { return g.casByThumbprint }, sha256Thumbprint,
		func(ctx context.Context) ([]*store.CACertificate, error) {
			return c.Store.CACertificatesByThumbprint(ctx, sha256Thumbprint)
		}, cloneAll(cloneCA))
}

// CACertificatesBySubject returns the CA certificates of a subject.
func (c *Cache) CACertificatesBySubject(ctx context.Context, subject []byte) ([]*store.CACertificate, error) {
	return keyed(c, ctx, func(g *generation) map[string][]*store.CACertificate { return g.casBySubject }, subjectKey(subject),
		func(ctx context.Context) ([]*store.CACertificate, error) {
			return c.Store.CACertificatesBySubject(ctx, bytes.Clone(subject))
		}, cloneAll(cloneCA))
}

// SigningCertsBySubject returns the groups' signing certificates of a
// subject.
func (c *Cache) SigningCertsBySubject(ctx context.Context, subject []byte) ([][]byte, error) {
	return keyed(c, ctx, func(g *generation) map[string][][]byte { return g.signingBySubject }, subjectKey(subject),
		func(ctx context.Context) ([][]byte, error) {
			return c.Store.SigningCertsBySubject(ctx, bytes.Clone(subject))
		},
		cloneAll(bytes.Clone))
}

// subjectKey keys a lookup by subject: the subject is the issuer name of a
// certificate a device presented, as long as the device made it.
func subjectKey(subject []byte) string {
	h := sha256.Sum256(subject)
	return string(h[:])
}
