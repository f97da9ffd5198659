package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/testutil"
)

func TestRetriable(t *testing.T) {
	pg := &Store{d: postgresDialect}
	lite := &Store{d: sqliteDialect}
	closed := &Store{d: postgresDialect}
	closed.closed.Store(true)
	unavail := func(err error) error { return fmt.Errorf("op: %w: %w", store.ErrUnavailable, err) }
	pgErr := func(code string) error { return unavail(&pgconn.PgError{Code: code}) }
	reset := unavail(syscall.ECONNRESET)
	for name, tt := range map[string]struct {
		s    *Store
		err  error
		kind callKind
		want bool
	}{
		"ok/serialization failure of a write":         {pg, pgErr("40001"), write, true},
		"ok/deadlock of a write":                      {pg, pgErr("40P01"), write, true},
		"ok/server shutting down":                     {pg, pgErr("57P01"), write, true},
		"ok/lost connection while reading":            {pg, reset, read, true},
		"ok/lost connection during a lookup":          {pg, reset, lookup, true},
		"ok/lost connection before COMMIT":            {pg, notCommitted{reset}, write, true},
		"no/lost connection while a write was sent":   {pg, reset, write, false},
		"no/lost connection while COMMIT was sent":    {pg, unavail(io.ErrUnexpectedEOF), write, false},
		"no/a timeout":                                {pg, unavail(context.DeadlineExceeded), read, false},
		"no/a request error":                          {pg, fmt.Errorf("op: %w", &pgconn.PgError{Code: "23514"}), write, false},
		"no/a sentinel":                               {pg, fmt.Errorf("op: %w", store.ErrPreconditionFailed), write, false},
		"no/SQLite waits for locks instead":           {lite, reset, read, false},
		"no/a closed store":                           {closed, reset, read, false},
		"no/a conflict":                               {pg, notCommitted{fmt.Errorf("x: %w", store.ErrConflict)}, write, false},
		"ok/a deadlock inside a transaction (marked)": {pg, notCommitted{pgErr("40P01")}, write, true},
	} {
		t.Run(name, func(t *testing.T) {
			if got := tt.s.retriable(t.Context(), tt.err, tt.kind); got != tt.want {
				t.Fatalf("retriable(%v, kind %v) = %v, want %v", tt.err, tt.kind, got, tt.want)
			}
		})
	}
	t.Run("no/the caller gave up", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if pg.retriable(ctx, reset, read) {
			t.Fatal("retriable after the context ended")
		}
	})
}

func TestHealthLog(t *testing.T) {
	var buf testutil.LogBuffer
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	h := &health{log: slog.New(slog.NewTextHandler(&buf, nil)), now: func() time.Time { return now }}
	down := fmt.Errorf("enrollment: %w: %w", store.ErrUnavailable, syscall.ECONNREFUSED)
	step := func(d time.Duration, err error, n int) {
		for range n {
			h.observe(err)
			now = now.Add(d)
		}
	}
	want := func(what string, unavailable, still, again int) {
		t.Helper()
		if u, s, a := buf.Count("database unavailable"), buf.Count("database still unavailable"), buf.Count("database available again"); u != unavailable || s != still || a != again {
			t.Fatalf("%s: %d unavailable, %d still unavailable, %d available again lines; want %d %d %d\n%s",
				what, u, s, a, unavailable, still, again, buf.String())
		}
	}

	step(time.Millisecond, nil, 100)
	want("healthy", 0, 0, 0)
	step(10*time.Millisecond, down, 1000) // 10 s of failing requests
	want("an outage", 1, 0, 0)
	step(10*time.Millisecond, fmt.Errorf("x: %w", store.ErrNotFound), 1) // the database answered
	want("recovery", 1, 0, 1)
	step(time.Second, nil, 30)
	step(time.Second, down, 65) // 65 s down, logged at 0 s: reminders at 30 s and 60 s
	want("a long outage", 2, 2, 1)
	step(time.Second, nil, 1)
	want("recovery", 2, 2, 2)
	// Flapping within the log interval is not logged again.
	for range 20 {
		step(100*time.Millisecond, down, 1)
		step(100*time.Millisecond, nil, 1)
	}
	want("flapping", 2, 2, 2)
	// An outage that starts soon after the last one is logged late, but
	// logged: at most healthLogEvery after the last line.
	step(time.Second, down, 40)
	want("an outage soon after another", 3, 2, 2)
	step(time.Second, nil, 31)
	want("its end", 3, 2, 3)
	// Contention is not an outage.
	step(time.Minute, fmt.Errorf("x: %w: %w", store.ErrUnavailable, &pgconn.PgError{Code: "40P01"}), 3)
	want("deadlocks", 3, 2, 3)
}

// pgExec runs statements in the schema of dsn.
func pgExec(t *testing.T, dsn string, stmts ...string) {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// injectFailures makes the next n writes to table fail with SQLSTATE code,
// through a trigger, and returns a function that reports how many writes
// were attempted. A sequence counts the attempts: unlike a table, it is not
// rolled back with the failed transaction.
func injectFailures(t *testing.T, dsn, table, code string, n int) (attempts func() int) {
	t.Helper()
	seq := "attempts_" + table
	pgExec(t, dsn,
		`CREATE SEQUENCE `+seq,
		fmt.Sprintf(`CREATE FUNCTION fail_%[1]s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF nextval('%[2]s') <= %[3]d THEN
		RAISE EXCEPTION 'injected failure' USING ERRCODE = '%[4]s';
	END IF;
	RETURN NEW;
END $$`, table, seq, n, code),
		fmt.Sprintf(`CREATE TRIGGER fail_%[1]s BEFORE INSERT OR UPDATE ON %[1]s FOR EACH ROW EXECUTE FUNCTION fail_%[1]s()`, table))
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return func() int {
		var v int
		var called bool
		if err := db.QueryRowContext(context.Background(), `SELECT last_value, is_called FROM `+seq).Scan(&v, &called); err != nil {
			t.Fatal(err)
		}
		if !called {
			return 0
		}
		return v
	}
}

func TestPostgresRetries(t *testing.T) {
	base := pgDSN(t)
	enrollment := func(id string) *dps.IndividualEnrollment {
		return &dps.IndividualEnrollment{RegistrationID: id, EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey}}}
	}
	registration := func(id string) *store.Registration {
		return &store.Registration{Result: &dps.DeviceRegistrationResult{RegistrationID: id, Status: dps.StatusAssigned, AssignedHub: "hub1"}}
	}
	open := func(t *testing.T, opts Options) (*Store, string, *testutil.LogBuffer) {
		dsn := pgSchema(t, base)
		var buf testutil.LogBuffer
		opts.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		s, err := Open(t.Context(), dsn, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, dsn, &buf
	}

	t.Run("a serialization failure is retried", func(t *testing.T) {
		s, dsn, _ := open(t, Options{})
		attempts := injectFailures(t, dsn, "enrollments", "40001", 2)
		if _, err := s.PutEnrollment(t.Context(), enrollment("dev-1"), ""); err != nil {
			t.Fatalf("put after two serialization failures: %v", err)
		}
		if n := attempts(); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
	})

	t.Run("a deadlock in a transaction is retried", func(t *testing.T) {
		s, dsn, _ := open(t, Options{})
		attempts := injectFailures(t, dsn, "registrations", "40P01", 3)
		op := &store.Operation{ID: "op-1", RegistrationID: "dev-1", Status: dps.StatusAssigned, ExpiresAt: time.Now().Add(time.Hour)}
		if _, err := s.SaveRegistration(t.Context(), registration("dev-1"), "", op); err != nil {
			t.Fatalf("save after three deadlocks: %v", err)
		}
		if n := attempts(); n != 4 {
			t.Fatalf("%d attempts, want 4", n)
		}
		if _, err := s.Operation(t.Context(), "op-1"); err != nil {
			t.Fatalf("the operation of the retried transaction: %v", err)
		}
	})

	t.Run("retries are bounded, and the last failure is unavailable", func(t *testing.T) {
		s, dsn, logs := open(t, Options{Retries: 2})
		attempts := injectFailures(t, dsn, "enrollments", "40001", 100)
		_, err := s.PutEnrollment(t.Context(), enrollment("dev-1"), "")
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("put: %v, want ErrUnavailable", err)
		}
		if n := attempts(); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
		if n := logs.Count("database unavailable"); n != 0 {
			t.Fatalf("contention was logged as an outage:\n%s", logs)
		}
	})

	t.Run("negative retries disable them", func(t *testing.T) {
		s, dsn, _ := open(t, Options{Retries: -1})
		attempts := injectFailures(t, dsn, "enrollments", "40001", 1)
		if _, err := s.PutEnrollment(t.Context(), enrollment("dev-1"), ""); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("put: %v, want ErrUnavailable", err)
		}
		if n := attempts(); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})

	t.Run("an error in the request is not retried", func(t *testing.T) {
		s, dsn, _ := open(t, Options{})
		attempts := injectFailures(t, dsn, "enrollments", "23514", 100) // check_violation
		_, err := s.PutEnrollment(t.Context(), enrollment("dev-1"), "")
		if err == nil || errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("put: %v, want a plain error", err)
		}
		if n := attempts(); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})
}

// TestPostgresOutage takes the network between the store and PostgreSQL
// away and gives it back: calls fail fast with ErrUnavailable, the outage
// is logged once however many calls fail, and the store recovers by itself.
func TestPostgresOutage(t *testing.T) {
	dsn := pgSchema(t, pgDSN(t))
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	var logs testutil.LogBuffer
	s, err := Open(t.Context(), u.String(), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), QueryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	e := &dps.IndividualEnrollment{RegistrationID: "dev-1", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey}}}
	if _, err := s.PutEnrollment(ctx, e, ""); err != nil {
		t.Fatal(err)
	}

	proxy.Cut()
	start := time.Now()
	errs := make(chan error, 100)
	testutil.Together(10, func(int) {
		for range 10 {
			_, err := s.Enrollment(ctx, "dev-1")
			errs <- err
		}
	})
	close(errs)
	for err := range errs {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("a read during the outage: %v, want ErrUnavailable", err)
		}
	}
	if _, err := s.PutEnrollment(ctx, e, "*"); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a write during the outage: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping during the outage: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("102 calls against a refused connection took %s: they should fail fast", d)
	}
	if n := logs.Count("database unavailable"); n != 1 {
		t.Fatalf("%d outage lines for 102 failed calls, want 1:\n%s", n, logs.String())
	}

	proxy.Restore()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("ping after the network came back: %v", err)
	}
	if _, err := s.Enrollment(ctx, "dev-1"); err != nil {
		t.Fatalf("read after the network came back: %v", err)
	}
	if n := logs.Count("database available again"); n != 1 {
		t.Fatalf("%d recovery lines, want 1:\n%s", n, logs.String())
	}

	// Connections that broke while idle in the pool are replaced without
	// the caller noticing.
	proxy.Cut()
	proxy.Restore()
	time.Sleep(1100 * time.Millisecond) // the driver pings connections idle longer than 1 s
	if _, err := s.Enrollment(ctx, "dev-1"); err != nil {
		t.Fatalf("read over a pool of broken connections: %v", err)
	}
	if _, err := s.PutEnrollment(ctx, e, "*"); err != nil {
		t.Fatalf("write over a pool of broken connections: %v", err)
	}
}

// TestCallBounds: every call is bounded by the query timeout but a lookup
// on SQLite, which runs without cancellation (Store.ctx).
func TestCallBounds(t *testing.T) {
	for _, tt := range []struct {
		d        *dialect
		kind     callKind
		deadline bool
	}{
		{sqliteDialect, lookup, false},
		{sqliteDialect, read, true},
		{sqliteDialect, write, true},
		{postgresDialect, lookup, true},
		{postgresDialect, read, true},
		{postgresDialect, write, true},
	} {
		t.Run(fmt.Sprintf("%s/%d", tt.d.name, tt.kind), func(t *testing.T) {
			s := &Store{d: tt.d, timeout: time.Minute}
			parent, cancelParent := context.WithCancel(t.Context())
			ctx, cancel := s.ctx(parent, tt.kind)
			defer cancel()
			_, hasDeadline := ctx.Deadline()
			cancelParent()
			switch {
			case hasDeadline != tt.deadline:
				t.Fatalf("deadline set: %v, want %v", hasDeadline, tt.deadline)
			case !tt.deadline && ctx.Done() != nil:
				t.Fatal("a lookup's context can end: the SQLite driver would start a goroutine per statement")
			case tt.deadline && ctx.Err() == nil:
				t.Fatal("the call did not end with its caller's context")
			}
		})
	}
}
