package e2e_test

import (
	"database/sql"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/test/e2e"

	_ "modernc.org/sqlite" // to read the SQLite store of a node
)

// TestHubJobSurvivesKill: a node is killed (SIGKILL) while the hub call of
// an assignment hangs. The operation stays "assigning" until the job's
// lease runs out; then the node restarted on the same database, or another
// node of the same PostgreSQL database, takes it over and the device, which
// kept polling, gets "assigned" with its identity in the hub. No operation
// is left assigning.
func TestHubJobSurvivesKill(t *testing.T) {
	t.Parallel()
	// The job's timeout leaves ample time to kill its node before it ends
	// the job, and the lease (2 × 4 s) brings the takeover within seconds.
	args := []string{"--assign-timeout", "4s", "--assign-wait", "200ms"}
	run := func(t *testing.T, env *hubEnv, first *e2e.Server, next func() *e2e.Server, pending func() int) {
		t.Helper()
		env.link(t, first)
		key := env.enroll(t, first, "survivor", hubCase{})
		d := mnNewDevice(t, first, "survivor", mustB64(t, key))
		env.a.SetDelay(time.Minute)
		r := d.register(t, mnLocalAddr(first.DeviceEndpoint))
		if r.status != http.StatusAccepted || r.str("status") != "assigning" {
			t.Fatalf("register while the hub hangs: %d %s, want 202 assigning", r.status, r.raw)
		}
		opID := r.str("operationId")
		first.Kill()
		env.a.SetDelay(0)
		if n := pending(); n != 1 {
			t.Fatalf("%d pending jobs after the kill, want the one of the device", n)
		}
		s := next()
		deadline := time.Now().Add(30 * time.Second)
		for {
			p := d.poll(t, mnLocalAddr(s.DeviceEndpoint), opID)
			if p.status == http.StatusOK {
				if p.str("status") != "assigned" || p.str("registrationState.assignedHub") != env.a.HostName {
					t.Fatalf("the operation ended %s", p.raw)
				}
				break
			}
			if p.status != http.StatusAccepted || p.str("status") != "assigning" || time.Now().After(deadline) {
				t.Fatalf("poll: %d %s", p.status, p.raw)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, ok := env.a.Device("survivor"); !ok {
			t.Error("the hub has no device after the takeover")
		}
		if n := pending(); n != 0 {
			t.Errorf("%d jobs still pending", n)
		}
		if !devLogLine(s, "resuming an assignment whose node stopped", "registrationId=survivor") {
			t.Errorf("no takeover in the log of %s:\n%s", s.DeviceEndpoint, s.Logs())
		}
	}

	t.Run("restarted node", func(t *testing.T) {
		t.Parallel()
		env := newHubEnv(t)
		s := e2e.StartServer(t, env.args(args...)...)
		db, err := sql.Open("sqlite", "file:"+filepath.Join(s.Dir, server.DBFile)+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		run(t, env, s, func() *e2e.Server { return e2e.StartServerIn(t, s.Dir, env.args(args...)...) },
			func() int { return hubPending(t, db) })
	})
	t.Run("other node", func(t *testing.T) {
		t.Parallel()
		env := newHubEnv(t)
		nodes, dsn := mnCluster(t, 2, env.args(args...)...)
		db := mnDB(t, dsn)
		run(t, env, nodes[0], func() *e2e.Server { return nodes[1] }, func() int { return hubPending(t, db) })
	})
}

// hubPending counts the operations whose assignment has not ended.
func hubPending(t *testing.T, db *sql.DB) int {
	t.Helper()
	return mnCount(t, db, `SELECT COUNT(*) FROM operations WHERE job IS NOT NULL OR status = 'assigning'`)
}
