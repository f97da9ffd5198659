package instance_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/dpsd/dpsd/internal/instance"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/testutil"
)

// TestTPMChallengeSecret: a new instance has a 32-byte TPM challenge
// secret; an instance of an older version, without one, gets one at the
// next start, and nodes starting together on it agree on it; later starts
// keep it.
func TestTPMChallengeSecret(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "dpsd.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	inst, created, err := instance.Ensure(ctx, st, nil)
	if err != nil || !created || len(inst.TPMChallengeSecret) != 32 {
		t.Fatalf("first start: created %v, secret of %d bytes, %v", created, len(inst.TPMChallengeSecret), err)
	}

	// The instance as an older version left it.
	old := *inst
	old.TPMChallengeSecret = nil
	if err := st.RestoreInstance(ctx, &old); err != nil {
		t.Fatal(err)
	}
	secrets := make([][]byte, 4)
	errs := make([]error, len(secrets))
	testutil.Together(len(secrets), func(i int) {
		got, _, err := instance.Ensure(ctx, st, nil)
		if errs[i] = err; err == nil {
			secrets[i] = got.TPMChallengeSecret
		}
	})
	for i, s := range secrets {
		if errs[i] != nil || len(s) != 32 || !bytes.Equal(s, secrets[0]) || bytes.Equal(s, inst.TPMChallengeSecret) {
			t.Fatalf("node %d: secret %x (%v), node 0 %x: want one new secret for all", i, s, errs[i], secrets[0])
		}
	}
	again, _, err := instance.Ensure(ctx, st, nil)
	if err != nil || !bytes.Equal(again.TPMChallengeSecret, secrets[0]) {
		t.Fatalf("a later start: secret %x, %v; want %x", again.TPMChallengeSecret, err, secrets[0])
	}
}
