package cache_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/provisioning/provtest"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/cache"
	"github.com/dpsd/dpsd/internal/testutil"
)

// counting counts the store calls the cache makes, by method.
type counting struct {
	store.Store
	mu    sync.Mutex
	calls map[string]int
	// version, when set, answers ConfigVersion instead of the store.
	version func(ctx context.Context) (int64, error)
	// fail, when set, fails the lookups.
	fail error
}

func newCounting(s store.Store) *counting { return &counting{Store: s, calls: map[string]int{}} }

func (c *counting) count(method string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[method]++
	return c.fail
}

func (c *counting) n(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[method]
}

func (c *counting) ConfigVersion(ctx context.Context) (int64, error) {
	c.count("ConfigVersion")
	if c.version != nil {
		return c.version(ctx)
	}
	return c.Store.ConfigVersion(ctx)
}

func (c *counting) Instance(ctx context.Context) (*store.Instance, error) {
	if err := c.count("Instance"); err != nil {
		return nil, err
	}
	return c.Store.Instance(ctx)
}

func (c *counting) LinkedHubs(ctx context.Context) ([]*store.LinkedHub, error) {
	if err := c.count("LinkedHubs"); err != nil {
		return nil, err
	}
	return c.Store.LinkedHubs(ctx)
}

func (c *counting) Group(ctx context.Context, id string) (*dps.EnrollmentGroup, error) {
	if err := c.count("Group"); err != nil {
		return nil, err
	}
	return c.Store.Group(ctx, id)
}

func (c *counting) GroupsBySigningCert(ctx context.Context, tp string) ([]*dps.EnrollmentGroup, error) {
	if err := c.count("GroupsBySigningCert"); err != nil {
		return nil, err
	}
	return c.Store.GroupsBySigningCert(ctx, tp)
}

func (c *counting) GroupsByCA(ctx context.Context, name string) ([]*dps.EnrollmentGroup, error) {
	if err := c.count("GroupsByCA"); err != nil {
		return nil, err
	}
	return c.Store.GroupsByCA(ctx, name)
}

func (c *counting) SymmetricKeyGroups(ctx context.Context) ([]*dps.EnrollmentGroup, error) {
	if err := c.count("SymmetricKeyGroups"); err != nil {
		return nil, err
	}
	return c.Store.SymmetricKeyGroups(ctx)
}

func (c *counting) CACertificatesByThumbprint(ctx context.Context, tp string) ([]*store.CACertificate, error) {
	if err := c.count("CACertificatesByThumbprint"); err != nil {
		return nil, err
	}
	return c.Store.CACertificatesByThumbprint(ctx, tp)
}

func (c *counting) CACertificatesBySubject(ctx context.Context, subject []byte) ([]*store.CACertificate, error) {
	if err := c.count("CACertificatesBySubject"); err != nil {
		return nil, err
	}
	return c.Store.CACertificatesBySubject(ctx, subject)
}

func (c *counting) SigningCertsBySubject(ctx context.Context, subject []byte) ([][]byte, error) {
	if err := c.count("SigningCertsBySubject"); err != nil {
		return nil, err
	}
	return c.Store.SigningCertsBySubject(ctx, subject)
}

// fixture is an instance with a linked hub, a verified CA and its group, a
// group on a signing certificate and a symmetric-key group.
type fixture struct {
	provtest.Instance
	dbPath     string
	root       testutil.CA
	signer     testutil.CA
	rootTP     string
	signerTP   string
	rootSubj   []byte
	signerSubj []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, _, dbPath := provtest.OpenStore(t)
	t.Cleanup(func() { st.Close() })
	f := &fixture{Instance: provtest.Instance{T: t, Store: st, Scope: "0ne00000C0C"}, dbPath: dbPath}
	f.LinkHub(provtest.Hub1, 1, true)
	f.root = f.VerifiedRoot("root", pki.Options{CommonName: "Cache Root"})
	f.PutGroup(provtest.CAGroup("grp-ca", "root"))
	f.signer = testutil.NewRoot(t, pki.Options{CommonName: "Cache Signer"})
	f.PutGroup(provtest.SigningGroup("grp-signer", f.signer.Cert))
	f.PutGroup(provtest.SymGroup("grp-sym"))
	f.rootTP, f.signerTP = pki.SHA256Thumbprint(f.root.Cert), pki.SHA256Thumbprint(f.signer.Cert)
	f.rootSubj, f.signerSubj = f.root.Cert.RawSubject, f.signer.Cert.RawSubject
	return f
}

// lookupTable is every lookup the cache serves, of a record the fixture
// holds.
func (f *fixture) lookupTable() map[string]func(context.Context, store.Store) (any, error) {
	return map[string]func(context.Context, store.Store) (any, error){
		"Instance":   func(ctx context.Context, s store.Store) (any, error) { return s.Instance(ctx) },
		"LinkedHubs": func(ctx context.Context, s store.Store) (any, error) { return ptr(s.LinkedHubs(ctx)) },
		"Group":      func(ctx context.Context, s store.Store) (any, error) { return s.Group(ctx, "GRP-SYM") },
		"GroupsBySigningCert": func(ctx context.Context, s store.Store) (any, error) {
			return ptr(s.GroupsBySigningCert(ctx, f.signerTP))
		},
		"GroupsByCA":         func(ctx context.Context, s store.Store) (any, error) { return ptr(s.GroupsByCA(ctx, "root")) },
		"SymmetricKeyGroups": func(ctx context.Context, s store.Store) (any, error) { return ptr(s.SymmetricKeyGroups(ctx)) },
		"CACertificatesByThumbprint": func(ctx context.Context, s store.Store) (any, error) {
			return ptr(s.CACertificatesByThumbprint(ctx, f.rootTP))
		},
		"CACertificatesBySubject": func(ctx context.Context, s store.Store) (any, error) {
			return ptr(s.CACertificatesBySubject(ctx, f.rootSubj))
		},
		"SigningCertsBySubject": func(ctx context.Context, s store.Store) (any, error) {
			return ptr(s.SigningCertsBySubject(ctx, f.signerSubj))
		},
	}
}

func ptr[T any](v T, err error) (*T, error) { return &v, err }

// lookups runs every lookup the cache serves once and fails t on an error.
func (f *fixture) lookups(t *testing.T, c store.Store) {
	t.Helper()
	for name, lookup := range f.lookupTable() {
		if _, err := lookup(t.Context(), c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

var lookupMethods = []string{"Instance", "LinkedHubs", "Group", "GroupsBySigningCert", "GroupsByCA", "SymmetricKeyGroups",
	"CACertificatesByThumbprint", "CACertificatesBySubject", "SigningCertsBySubject"}

// TestServesFromMemory: after a Sync, a lookup reads the store once, and
// again only after a write changed the configuration and a Sync saw it. A
// cache never synced passes every call through.
func TestServesFromMemory(t *testing.T) {
	f := newFixture(t)
	st := newCounting(f.Store)
	c := cache.New(st)
	ctx := t.Context()

	f.lookups(t, c)
	for _, m := range lookupMethods {
		if st.n(m) != 1 {
			t.Errorf("before any Sync, %s read the store %d times, want 1", m, st.n(m))
		}
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		f.lookups(t, c)
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range lookupMethods {
		if st.n(m) != 2 {
			t.Errorf("%s read the store %d times in three synced rounds, want once", m, st.n(m))
		}
	}
	// An individual enrollment is not configuration.
	f.PutIndividual(provtest.SymIndividual("dev-1"))
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	f.lookups(t, c)
	if n := st.n("LinkedHubs"); n != 2 {
		t.Errorf("an enrollment write dropped the cache: LinkedHubs read %d times", n)
	}
	f.LinkHub("hub2.azure-devices.net", 1, true)
	f.lookups(t, c) // not synced yet: what it held
	if n := st.n("LinkedHubs"); n != 2 {
		t.Errorf("the cache read the store before a Sync: LinkedHubs read %d times", n)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	f.lookups(t, c)
	for _, m := range lookupMethods {
		if st.n(m) != 3 {
			t.Errorf("after a configuration write and a Sync, %s read the store %d times, want 3", m, st.n(m))
		}
	}
	hubs, err := c.LinkedHubs(ctx)
	if err != nil || len(hubs) != 2 {
		t.Fatalf("linked hubs after the write: %d, %v", len(hubs), err)
	}
}

// TestAnotherProcess: a write by another process on the same SQLite file
// (another Store, as `dpsd import` opens while dpsd serves) is seen at the
// next Sync, for each kind of record the cache holds.
func TestAnotherProcess(t *testing.T) {
	f := newFixture(t)
	c := cache.New(f.Store)
	other := openStore(t, f.dbPath)
	t.Cleanup(func() { other.Close() })
	ctx := t.Context()
	sync := func() {
		t.Helper()
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	sync()
	f.lookups(t, c)

	// Through RestoreAll, as dpsd import writes.
	g := provtest.CAGroup("grp-ca", "root")
	g.IotHubs = []string{"hub2.azure-devices.net"}
	g.Etag = `"imported"`
	if err := other.RestoreAll(ctx, func(r store.Restorer) error {
		return r.Restore(ctx, []store.Record{{Group: g}, {LinkedHub: &store.LinkedHub{Name: "hub2.azure-devices.net", AllocationWeight: 1}}})
	}); err != nil {
		t.Fatal(err)
	}
	sync()
	gs, err := c.GroupsByCA(ctx, "root")
	if err != nil || len(gs) != 1 || !slices.Equal(gs[0].IotHubs, g.IotHubs) {
		t.Fatalf("groups of the CA after the import: %+v, %v", gs, err)
	}
	if hubs, err := c.LinkedHubs(ctx); err != nil || len(hubs) != 2 {
		t.Fatalf("linked hubs after the import: %d, %v", len(hubs), err)
	}

	// Through the everyday calls.
	if err := other.DeleteCACertificate(ctx, "root", ""); err != nil {
		t.Fatal(err)
	}
	if err := other.DeleteGroup(ctx, "grp-sym", ""); err != nil {
		t.Fatal(err)
	}
	inst, err := other.Instance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inst.AllocationPolicy = dps.AllocationStatic
	if err := other.UpdateInstance(ctx, inst); err != nil {
		t.Fatal(err)
	}
	sync()
	if cas, err := c.CACertificatesByThumbprint(ctx, f.rootTP); err != nil || len(cas) != 0 {
		t.Errorf("CAs by thumbprint after the delete: %d, %v", len(cas), err)
	}
	if cas, err := c.CACertificatesBySubject(ctx, f.rootSubj); err != nil || len(cas) != 0 {
		t.Errorf("CAs by subject after the delete: %d, %v", len(cas), err)
	}
	if _, err := c.Group(ctx, "grp-sym"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted group: %v, want not found", err)
	}
	if gs, err := c.SymmetricKeyGroups(ctx); err != nil || len(gs) != 0 {
		t.Errorf("symmetric-key groups after the delete: %d, %v", len(gs), err)
	}
	if got, err := c.Instance(ctx); err != nil || got.AllocationPolicy != dps.AllocationStatic {
		t.Errorf("instance after the update: %+v, %v", got, err)
	}
}

// TestSyncFails: a version that cannot be read fails Sync, and a caller
// whose context ends stops waiting.
func TestSyncFails(t *testing.T) {
	f := newFixture(t)
	st := newCounting(f.Store)
	st.version = func(context.Context) (int64, error) { return 0, store.ErrUnavailable }
	c := cache.New(st)
	if err := c.Sync(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Sync: %v, want unavailable", err)
	}
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	st.version = func(ctx context.Context) (int64, error) {
		select {
		case <-block:
			return 1, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Sync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync with an ended context: %v", err)
	}
}

// TestKeepsNotFoundNotErrors: that a group does not exist is kept; a
// failed read is not.
func TestKeepsNotFoundNotErrors(t *testing.T) {
	f := newFixture(t)
	st := newCounting(f.Store)
	c := cache.New(st)
	ctx := t.Context()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Group(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("missing group: %v", err)
		}
	}
	if n := st.n("Group"); n != 1 {
		t.Errorf("a missing group was read %d times, want once", n)
	}
	st.fail = store.ErrUnavailable
	if _, err := c.GroupsByCA(ctx, "root"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("failing store: %v", err)
	}
	st.fail = nil
	if gs, err := c.GroupsByCA(ctx, "root"); err != nil || len(gs) != 1 {
		t.Fatalf("after the failure: %d groups, %v", len(gs), err)
	}
}

// TestMaxEntries: past MaxEntries keyed lookups, entries are dropped, and
// read again when asked for.
func TestMaxEntries(t *testing.T) {
	f := newFixture(t)
	st := newCounting(f.Store)
	c := cache.New(st)
	c.MaxEntries = 2
	ctx := t.Context()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	tps := []string{"AA", "BB", "CC", "DD"}
	for range 2 {
		for _, tp := range tps {
			if _, err := c.GroupsBySigningCert(ctx, tp); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := st.n("GroupsBySigningCert"); n <= len(tps) {
		t.Errorf("%d lookups of %d thumbprints through a cache of 2 read the store %d times", 2*len(tps), len(tps), n)
	}
}

// TestLookupsReturnCopies: what a lookup returns is the caller's own, read
// from the store or from memory: changing all of it changes nothing a later
// lookup returns.
func TestLookupsReturnCopies(t *testing.T) {
	f := newFixture(t)
	c := cache.New(f.Store)
	ctx := t.Context()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for name, lookup := range f.lookupTable() {
		t.Run(name, func(t *testing.T) {
			want, err := lookup(ctx, f.Store)
			if err != nil {
				t.Fatal(err)
			}
			for _, how := range []string{"read from the store", "served from memory"} {
				got, err := lookup(ctx, c)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%s: the answer differs from the store's", how)
				}
				cache.Scribble(got)
				if reflect.DeepEqual(got, want) {
					t.Fatalf("%s: the fixture returned nothing to change", how)
				}
			}
			if got, err := lookup(ctx, c); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("after callers changed what they got, the answer differs from the store's (%v)", err)
			}
		})
	}
}
