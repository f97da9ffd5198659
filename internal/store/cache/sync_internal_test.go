package cache

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/dpsd/dpsd/internal/store"
)

// versions answers ConfigVersion with what the test releases, one read at
// a time.
type versions struct {
	store.Store
	reads   atomic.Int32
	started chan int32
	release chan int64
}

func (v *versions) ConfigVersion(context.Context) (int64, error) {
	v.started <- v.reads.Add(1)
	return <-v.release, nil
}

// TestSyncWaitsForAFreshRead: a Sync called while a read of the version is
// in flight does not take that read's answer, which may predate it; it
// waits for the next one, which it shares with the Syncs called meanwhile.
func TestSyncWaitsForAFreshRead(t *testing.T) {
	v := &versions{started: make(chan int32, 4), release: make(chan int64)}
	c := New(v)
	ctx := t.Context()
	done := make([]chan error, 3)
	sync := func(i int) {
		done[i] = make(chan error, 1)
		go func() { done[i] <- c.Sync(ctx) }()
	}

	sync(0)
	if r := <-v.started; r != 1 {
		t.Fatalf("read %d started first", r)
	}
	sync(1) // while read 1 is in flight
	sync(2)
	for !c.joined(2) {
		runtime.Gosched()
	}
	v.release <- 7
	if err := <-done[0]; err != nil {
		t.Fatal(err)
	}
	if r := <-v.started; r != 2 {
		t.Fatalf("read %d started second", r)
	}
	// Read 2 has not answered: the later Syncs cannot have returned.
	for i := 1; i <= 2; i++ {
		select {
		case err := <-done[i]:
			t.Fatalf("Sync %d returned (%v) with the answer of a read that began before it", i, err)
		default:
		}
	}
	v.release <- 8
	for i := 1; i <= 2; i++ {
		if err := <-done[i]; err != nil {
			t.Fatal(err)
		}
	}
	if n := v.reads.Load(); n != 2 {
		t.Errorf("three Syncs made %d reads, want 2", n)
	}
	if g := c.gen.Load(); g == nil || g.version != 8 {
		t.Errorf("the cache holds version %v, want 8", g)
	}
}

// joined reports whether n Syncs wait for the next read.
func (c *Cache) joined(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting != nil && c.waiting.waiters == n
}

// noIssuers knows no certificate of any subject.
type noIssuers struct{ store.Store }

func (noIssuers) ConfigVersion(context.Context) (int64, error) { return 1, nil }
func (noIssuers) CACertificatesBySubject(context.Context, []byte) ([]*store.CACertificate, error) {
	return nil, nil
}
func (noIssuers) SigningCertsBySubject(context.Context, []byte) ([][]byte, error) { return nil, nil }

// TestSubjectKeysAreSmall: the issuer name a device presents can be as long
// as its certificate; what the cache keeps of the lookup is not.
func TestSubjectKeysAreSmall(t *testing.T) {
	c := New(noIssuers{})
	ctx := t.Context()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	subject := make([]byte, 60_000)
	for i := range 3 {
		subject[0] = byte(i)
		if _, err := c.CACertificatesBySubject(ctx, subject); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SigningCertsBySubject(ctx, subject); err != nil {
			t.Fatal(err)
		}
	}
	g := c.gen.Load()
	if len(g.casBySubject) != 3 || len(g.signingBySubject) != 3 {
		t.Fatalf("kept %d and %d lookups of 3 subjects", len(g.casBySubject), len(g.signingBySubject))
	}
	for k := range g.casBySubject {
		if len(k) > 64 {
			t.Errorf("a CA lookup by subject is kept under a key of %d bytes", len(k))
		}
	}
	for k := range g.signingBySubject {
		if len(k) > 64 {
			t.Errorf("a signing certificate lookup by subject is kept under a key of %d bytes", len(k))
		}
	}
}
