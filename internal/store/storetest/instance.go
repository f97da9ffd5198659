package storetest

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// newInstance is an instance with every field set, distinct per scope.
func newInstance(scope string) *store.Instance {
	return &store.Instance{
		IDScope:            scope,
		CreatedAt:          time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC),
		AllocationPolicy:   dps.AllocationHashed,
		ServerCACertPEM:    []byte("-----BEGIN CERTIFICATE-----\nCA " + scope + "\n-----END CERTIFICATE-----\n"),
		ServerCAKeyPEM:     []byte("-----BEGIN PRIVATE KEY-----\nCA KEY " + scope + "\n-----END PRIVATE KEY-----\n"),
		ServerCertPEM:      []byte("-----BEGIN CERTIFICATE-----\nSERVER " + scope + "\n-----END CERTIFICATE-----\n"),
		ServerKeyPEM:       []byte("-----BEGIN PRIVATE KEY-----\nSERVER KEY " + scope + "\n-----END PRIVATE KEY-----\n"),
		HostNames:          []string{"dps.example.com", "localhost"},
		TPMChallengeSecret: []byte("TPM challenge secret of " + scope),
	}
}

// sameInstance fails t unless got and want hold the same values.
func sameInstance(t *testing.T, what string, got, want *store.Instance) {
	t.Helper()
	if got.IDScope != want.IDScope || !got.CreatedAt.Equal(want.CreatedAt) || got.AllocationPolicy != want.AllocationPolicy ||
		!bytes.Equal(got.ServerCACertPEM, want.ServerCACertPEM) || !bytes.Equal(got.ServerCAKeyPEM, want.ServerCAKeyPEM) ||
		!bytes.Equal(got.ServerCertPEM, want.ServerCertPEM) || !bytes.Equal(got.ServerKeyPEM, want.ServerKeyPEM) ||
		!slices.Equal(got.HostNames, want.HostNames) || !bytes.Equal(got.TPMChallengeSecret, want.TPMChallengeSecret) {
		t.Fatalf("%s: got %+v, want %+v", what, got, want)
	}
}

// storedInstance checks the instance the store holds.
func storedInstance(t *testing.T, s store.Store, what string, want *store.Instance) {
	t.Helper()
	got, err := s.Instance(bg(t))
	must(t, err, "instance")
	sameInstance(t, what, got, want)
}

func testInstance(t *testing.T, open func(*testing.T) store.Store) {
	same, stored := sameInstance, storedInstance

	t.Run("get/before init is not found", func(t *testing.T) {
		s := open(t)
		_, err := s.Instance(bg(t))
		wantErr(t, err, store.ErrNotFound, "instance")
	})

	t.Run("init/stores and returns the instance", func(t *testing.T) {
		s := open(t)
		in := newInstance("0ne00000001")
		got, err := s.InitInstance(bg(t), in)
		must(t, err, "init")
		same(t, "init", got, in)
		stored(t, s, "instance", in)
	})

	t.Run("init/twice returns the first instance", func(t *testing.T) {
		s := open(t)
		first := newInstance("0ne00000001")
		_, err := s.InitInstance(bg(t), first)
		must(t, err, "first init")
		got, err := s.InitInstance(bg(t), newInstance("0ne00000002"))
		must(t, err, "second init")
		same(t, "second init", got, first)
		stored(t, s, "instance", first)
	})

	t.Run("init/concurrent first starts agree", func(t *testing.T) {
		s := open(t)
		const n = 8
		scopes := make([]string, n)
		errs := make([]error, n)
		testutil.Together(n, func(i int) {
			got, err := s.InitInstance(bg(t), newInstance(fmt.Sprintf("0ne0000000%d", i)))
			errs[i] = err
			if err == nil {
				scopes[i] = got.IDScope
			}
		})
		for i := range n {
			must(t, errs[i], "init")
			if scopes[i] != scopes[0] {
				t.Fatalf("InitInstance %d returned scope %q, another returned %q", i, scopes[i], scopes[0])
			}
		}
		got, err := s.Instance(bg(t))
		must(t, err, "instance")
		if got.IDScope != scopes[0] {
			t.Fatalf("stored scope %q, InitInstance returned %q", got.IDScope, scopes[0])
		}
	})

	t.Run("update/replaces mutable fields only", func(t *testing.T) {
		s := open(t)
		first := newInstance("0ne00000001")
		_, err := s.InitInstance(bg(t), first)
		must(t, err, "init")
		upd := newInstance("0ne0000000X") // other scope, CA, creation time and TPM challenge secret: ignored
		upd.CreatedAt = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		upd.AllocationPolicy = dps.AllocationGeoLatency
		upd.ServerCertPEM = []byte("new server cert")
		upd.ServerKeyPEM = []byte("new server key")
		upd.HostNames = []string{"new.example.com"}
		must(t, s.UpdateInstance(bg(t), upd), "update")

		want := newInstance("0ne00000001")
		want.AllocationPolicy = upd.AllocationPolicy
		want.ServerCertPEM = upd.ServerCertPEM
		want.ServerKeyPEM = upd.ServerKeyPEM
		want.HostNames = upd.HostNames
		stored(t, s, "after update", want)
	})

	t.Run("update/sets the TPM challenge secret once", func(t *testing.T) {
		s := open(t)
		old := newInstance("0ne00000001")
		old.TPMChallengeSecret = nil // an instance of a version without one
		_, err := s.InitInstance(bg(t), old)
		must(t, err, "init")
		stored(t, s, "before update", old)
		// Nodes starting together each offer a secret: one is kept, and
		// every node reads that one back.
		const n = 6
		errs := make([]error, n)
		testutil.Together(n, func(i int) {
			upd := newInstance("0ne00000001")
			upd.TPMChallengeSecret = fmt.Appendf(nil, "secret of node %d", i)
			errs[i] = s.UpdateInstance(bg(t), upd)
		})
		for i := range n {
			must(t, errs[i], "update")
		}
		got, err := s.Instance(bg(t))
		must(t, err, "instance")
		if !bytes.HasPrefix(got.TPMChallengeSecret, []byte("secret of node ")) {
			t.Fatalf("TPM challenge secret %q after the updates, want one of theirs", got.TPMChallengeSecret)
		}
		upd := newInstance("0ne00000001")
		upd.TPMChallengeSecret = []byte("a later secret")
		must(t, s.UpdateInstance(bg(t), upd), "update")
		want := newInstance("0ne00000001")
		want.TPMChallengeSecret = got.TPMChallengeSecret
		stored(t, s, "after a later update", want)
	})

	t.Run("update/before init is not found", func(t *testing.T) {
		s := open(t)
		wantErr(t, s.UpdateInstance(bg(t), newInstance("0ne00000001")), store.ErrNotFound, "update")
	})

	t.Run("restore/creates the instance", func(t *testing.T) {
		s := open(t)
		in := newInstance("0ne00000007")
		must(t, s.RestoreInstance(bg(t), in), "restore")
		stored(t, s, "restored", in)
	})

	t.Run("restore/replaces everything, ID scope and CA included", func(t *testing.T) {
		s := open(t)
		_, err := s.InitInstance(bg(t), newInstance("0ne00000001"))
		must(t, err, "init")
		in := newInstance("0ne00000002")
		in.CreatedAt = time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
		must(t, s.RestoreInstance(bg(t), in), "restore")
		stored(t, s, "restored", in)
		// InitInstance still keeps what is stored.
		got, err := s.InitInstance(bg(t), newInstance("0ne00000003"))
		must(t, err, "init after restore")
		same(t, "init after restore", got, in)
	})

	t.Run("get/returns fresh copies", func(t *testing.T) {
		s := open(t)
		in := newInstance("0ne00000001")
		out, err := s.InitInstance(bg(t), in)
		must(t, err, "init")
		in.HostNames[0] = "mutated-input"
		out.HostNames[0] = "mutated-output"
		if len(out.ServerKeyPEM) > 0 {
			out.ServerKeyPEM[0] = 'X'
		}
		stored(t, s, "after mutation", newInstance("0ne00000001"))
	})
}
