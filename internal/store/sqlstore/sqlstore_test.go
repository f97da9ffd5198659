package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/testutil"
)

func openSQLite(t testing.TB, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "dpsd.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openSQLite(t, Options{}) })
}

// pgDSN returns the PostgreSQL test server, skipping the test without one
// except in CI, where a missing server must not pass unnoticed.
func pgDSN(t *testing.T) string { return storetest.PostgresDSN(t) }

// pgSchema creates a schema of its own for one test, dropped when the test
// ends, and returns a DSN whose search_path selects it.
func pgSchema(t *testing.T, dsn string) string { return storetest.PostgresSchema(t, dsn) }

func openPostgres(t *testing.T, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgSchema(t, dsn), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPostgres(t *testing.T) {
	dsn := pgDSN(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openPostgres(t, dsn, Options{}) })
}

func TestSQLiteFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "db")
	path := filepath.Join(dir, "dpsd.db")
	s, err := Open(t.Context(), "sqlite:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A write makes SQLite create the -wal and -shm files.
	if _, err := s.PutPolicy(t.Context(), &store.Policy{Name: "p", PrimaryKey: "a2V5"}, ""); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: mode %v, want 0600", filepath.Base(p), got)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode %v, want 0700", got)
	}
}

func TestSQLitePragmas(t *testing.T) {
	s := openSQLite(t, Options{})
	ctx := t.Context()
	conn, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"synchronous":  "2", // FULL
		"foreign_keys": "1",
		"busy_timeout": fmt.Sprint(sqliteBusyTimeout.Milliseconds()),
	} {
		var got string
		if err := conn.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !strings.EqualFold(got, want) {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	// Reads cannot write, by construction.
	if _, err := s.r.ExecContext(ctx, `DELETE FROM enrollments`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestSQLiteDSNForms(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{
		filepath.Join(dir, "plain.db"),
		"sqlite:" + filepath.Join(dir, "sqlite.db"),
		"file:" + filepath.Join(dir, "file.db"),
		"file:" + filepath.Join(dir, "query.db") + "?cache=private",
	} {
		s, err := Open(t.Context(), dsn, Options{})
		if err != nil {
			t.Fatalf("%s: %v", dsn, err)
		}
		if s.Engine() != "sqlite" {
			t.Errorf("%s: engine %s", dsn, s.Engine())
		}
		if err := s.Ping(t.Context()); err != nil {
			t.Errorf("%s: %v", dsn, err)
		}
		s.Close()
	}
	for _, dsn := range []string{"", ":memory:", "sqlite::memory:", "file:x.db?mode=memory"} {
		if s, err := Open(t.Context(), dsn, Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded; want an error, each pool would see its own database", dsn)
		}
	}
}

func TestSQLiteReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dpsd.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	put, err := s.PutEnrollment(t.Context(), &dps.IndividualEnrollment{RegistrationID: "Dev-1",
		EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.InitInstance(t.Context(), &store.Instance{IDScope: "0ne00000001"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Enrollment(t.Context(), "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.RegistrationID != "Dev-1" || got.Etag != put.Etag || !got.CreatedDateTimeUtc.Equal(put.CreatedDateTimeUtc.Time) {
		t.Fatalf("after reopen: %+v, want %+v", got, put)
	}
	inst, err := s.Instance(t.Context())
	if err != nil || inst.IDScope != "0ne00000001" {
		t.Fatalf("instance after reopen: %+v, %v", inst, err)
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dpsd.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	future := SchemaVersion() + 1
	if _, err := s.w.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, applied) VALUES ($1, 0)`, future); err != nil {
		t.Fatal(err)
	}
	s.Close()

	for _, opts := range []Options{{}, {SkipMigrate: true}} {
		s, err := Open(t.Context(), path, opts)
		if err == nil {
			s.Close()
			t.Fatalf("Open(SkipMigrate=%v) accepted a database at version %d", opts.SkipMigrate, future)
		}
		if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", future)) ||
			!strings.Contains(err.Error(), "upgrade dpsd") {
			t.Fatalf("Open(SkipMigrate=%v): %v; want ErrSchemaTooNew naming version %d and what to do", opts.SkipMigrate, err, future)
		}
	}
}

func TestSkipMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dpsd.db")
	_, err := Open(t.Context(), path, Options{SkipMigrate: true})
	if !errors.Is(err, ErrSchemaTooOld) || !strings.Contains(err.Error(), "dpsd migrate") {
		t.Fatalf("Open(SkipMigrate) on an empty database: %v, want ErrSchemaTooOld", err)
	}
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	s.Close()
	s, err = Open(t.Context(), path, Options{SkipMigrate: true})
	if err != nil {
		t.Fatalf("Open(SkipMigrate) on a migrated database: %v", err)
	}
	s.Close()
}

// testConcurrentOpen opens one database from several goroutines at once, as
// several nodes starting together would: every Open succeeds and each
// migration is applied once.
func testConcurrentOpen(t *testing.T, dsn string) {
	const n = 6
	errs := make([]error, n)
	stores := make([]*Store, n)
	testutil.Together(n, func(i int) { stores[i], errs[i] = Open(t.Context(), dsn, Options{}) })
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	var rows, max int
	if err := stores[0].r.QueryRowContext(t.Context(), `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&rows, &max); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) || max != SchemaVersion() {
		t.Fatalf("schema_migrations has %d rows up to %d, want %d up to %d", rows, max, len(migrations), SchemaVersion())
	}
}

func TestSQLiteConcurrentOpen(t *testing.T) {
	testConcurrentOpen(t, filepath.Join(t.TempDir(), "dpsd.db"))
}

// TestSQLiteOpenWhileWriting opens a new database file while another
// process is writing to it in SQLite's default journal mode: SQLite refuses
// the switch to WAL at once rather than wait, and Open must wait for the
// writer instead of failing.
func TestSQLiteOpenWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dpsd.db")
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{`BEGIN IMMEDIATE`, `CREATE TABLE other (x INTEGER)`} {
		if _, err := conn.ExecContext(t.Context(), q); err != nil {
			t.Fatal(err)
		}
	}
	opened := make(chan error, 1)
	go func() {
		s, err := Open(t.Context(), path, Options{})
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	// Long enough for Open to meet the lock; far below the busy timeout.
	time.Sleep(200 * time.Millisecond)
	if _, err := conn.ExecContext(t.Context(), `COMMIT`); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("Open beside a writer: %v", err)
	}
}

func TestPostgresConcurrentOpen(t *testing.T) {
	testConcurrentOpen(t, pgSchema(t, pgDSN(t)))
}

func TestPostgresUnreachable(t *testing.T) {
	// Nothing listens on port 1.
	_, err := Open(t.Context(), "postgres://dpsd:secret@127.0.0.1:1/dpsd?sslmode=disable&connect_timeout=2", Options{})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Open on a closed port: %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("the error shows the password: %v", err)
	}
}

func TestClockAndMonotonicUpdates(t *testing.T) {
	frozen := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	s := openSQLite(t, Options{Now: func() time.Time { return frozen }})
	ctx := t.Context()
	e := &dps.IndividualEnrollment{RegistrationID: "dev-1", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey}}}
	v1, err := s.PutEnrollment(ctx, e, "")
	if err != nil {
		t.Fatal(err)
	}
	want := frozen.Truncate(100 * time.Nanosecond)
	if !v1.CreatedDateTimeUtc.Equal(want) || !v1.LastUpdatedDateTimeUtc.Equal(want) {
		t.Fatalf("created %v updated %v, want the clock's %v", v1.CreatedDateTimeUtc, v1.LastUpdatedDateTimeUtc, want)
	}
	// With the clock stopped, updated still moves forward by one DPS tick.
	v2, err := s.PutEnrollment(ctx, e, v1.Etag)
	if err != nil {
		t.Fatal(err)
	}
	if !v2.LastUpdatedDateTimeUtc.Equal(want.Add(100*time.Nanosecond)) || !v2.CreatedDateTimeUtc.Equal(want) {
		t.Fatalf("second write: created %v updated %v", v2.CreatedDateTimeUtc, v2.LastUpdatedDateTimeUtc)
	}
}

func TestEtagShapes(t *testing.T) {
	s := openSQLite(t, Options{})
	e, err := s.PutEnrollment(t.Context(), &dps.IndividualEnrollment{RegistrationID: "dev-1",
		EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	// "1a2b3c4d-0000-0000-0000-5e8fe3d10000" with its quotes.
	if len(e.Etag) != 38 || e.Etag[0] != '"' || e.Etag[37] != '"' || strings.Count(e.Etag, "-") != 4 {
		t.Fatalf("etag %q is not shaped like Azure's", e.Etag)
	}
}

// Benchmarks.

func benchRegistration(i int64) *store.Registration {
	id := fmt.Sprintf("bench-dev-%d", i)
	return &store.Registration{
		Result: &dps.DeviceRegistrationResult{RegistrationID: id, DeviceID: id, AssignedHub: "hub1.azure-devices.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment,
			SymmetricKey: &dps.SymmetricKeyRegistrationResult{EnrollmentGroupID: "fleet"}},
		EnrollmentGroupID: "fleet",
	}
}

func benchOp(id string, r *store.Registration) *store.Operation {
	return &store.Operation{ID: id, RegistrationID: r.Result.RegistrationID, Status: dps.StatusAssigned,
		ExpiresAt: time.Now().Add(time.Hour)}
}

// BenchmarkSaveRegistration measures a first registration: the record and
// its operation in one transaction, synchronously durable.
func BenchmarkSaveRegistration(b *testing.B) {
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		s := openSQLite(b, Options{})
		ctx := context.Background()
		var i int64
		defer testutil.CPUPerOp(b)()
		for b.Loop() {
			i++
			r := benchRegistration(i)
			if _, err := s.SaveRegistration(ctx, r, "", benchOp(fmt.Sprintf("op-%d", i), r)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		benchSaveParallel(b, func(b *testing.B, opts Options) *Store { return openSQLite(b, opts) }, 1)
	})
}

// BenchmarkEnrollmentGet reads random enrollments out of 10,000.
func BenchmarkEnrollmentGet(b *testing.B) {
	const n = 10000
	s := openSQLite(b, Options{})
	ctx := context.Background()
	// One transaction: 10,000 durable commits would dominate the run.
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		e := &dps.IndividualEnrollment{RegistrationID: fmt.Sprintf("Dev-%05d", i),
			EnrollmentSettings: dps.EnrollmentSettings{
				Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey,
					SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeWtleXByaW1hcnlrZXk=", SecondaryKey: "c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5"}},
				ProvisioningStatus: dps.ProvisioningEnabled,
			}}
		if _, err := s.put(ctx, tx, enrollmentsT, "bench", key(e.RegistrationID), []any{testutil.JSON(b, e)}, "", newEtag); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		defer testutil.CPUPerOp(b)()
		for b.Loop() {
			i = (i + 7919) % n
			if _, err := s.Enrollment(ctx, fmt.Sprintf("dev-%05d", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var c atomic.Int64
		defer testutil.CPUPerOp(b)()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := int(c.Add(7919) % n)
				if _, err := s.Enrollment(ctx, fmt.Sprintf("dev-%05d", i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// TestSQLiteLookupsUseIndexes guards against a lookup that scans a table:
// harmless in tests, fatal with a million enrollments.
func TestSQLiteLookupsUseIndexes(t *testing.T) {
	s := openSQLite(t, Options{})
	for _, q := range []string{
		qEnrollment, qEnrollmentsAfter, qGroup, qGroupsAfter, qGroupsBySigningCert, qGroupsByCA,
		qSigningCertsBySubject, qGroupsByAttestation, qDeleteGroupSigningCerts, qDeleteGroupCARefs,
		qPolicy, qCA, qCAsByThumbprint, qCAsBySubject, qHub, qRegistration, qRegistrationsByGroup, qRegistrationsAfter,
		qOperation, qDeleteExpiredOperations, qDeleteRefusalsBefore, qDeleteRefusalsUpTo, qExpiredJobs, claimOperation, qConfigVersion,
		qIssuingCA, qIssued, qIssuedByThumbprint, qIssuedAfter, qIssuedByRegistration, qIssuedByCA, qIssuedByRegistrationAndCA,
		qIssuedOfRegistration, qRevokedByCA, revokeIssuedBySerial, revokeIssuedByRegistration,
		enrollmentsT.update, registrationsT.update, registrationsT.delIf, groupsT.del, groupsT.restore,
		// qRefusalCutoff walks an index by design: it finds the oldest entry
		// the count bound keeps.
		refusalList(t, store.RefusalFilter{}, "1.a"), refusalList(t, store.RefusalFilter{RegistrationID: "x"}, ""),
		refusalList(t, store.RefusalFilter{ErrorCode: 401002, Since: time.Unix(1, 0)}, "1.a"),
		refusalList(t, store.RefusalFilter{Since: time.Unix(1, 0), Until: time.Unix(2, 0)}, ""),
	} {
		n := strings.Count(q, "$")
		args := make([]any, n)
		for i := range args {
			args[i] = "x"
		}
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN ") {
				t.Errorf("%s\nscans a table: %q", q, plan)
			}
		}
	}
}

// refusalList is the query Refusals runs for f and after.
func refusalList(t *testing.T, f store.RefusalFilter, after string) string {
	t.Helper()
	q, args, err := refusalQuery(f, after)
	if err != nil {
		t.Fatal(err)
	}
	return q + " ORDER BY at DESC, id DESC LIMIT $" + fmt.Sprint(len(args)+1)
}

func TestPageSizeCap(t *testing.T) {
	s := openSQLite(t, Options{})
	ctx := t.Context()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxPageSize + 1 {
		e := &dps.IndividualEnrollment{RegistrationID: fmt.Sprintf("dev-%04d", i)}
		if _, err := s.put(ctx, tx, enrollmentsT, "test", key(e.RegistrationID), []any{testutil.JSON(t, e)}, "", newEtag); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := s.Enrollments(ctx, "", 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != maxPageSize || p.Next != fmt.Sprintf("dev-%04d", maxPageSize-1) {
		t.Fatalf("limit 5000: %d items, next %q; want %d and the last key", len(p.Items), p.Next, maxPageSize)
	}
	p, err = s.Enrollments(ctx, p.Next, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 1 || p.Next != "" {
		t.Fatalf("last page: %d items, next %q", len(p.Items), p.Next)
	}
}

func TestNormThumbprint(t *testing.T) {
	const canon = "AB12CD34EF56"
	for _, tc := range []struct{ in, want string }{
		{canon, canon},
		{"ab12cd34ef56", canon},
		{"AB:12:CD:34:EF:56", canon},
		{"ab 12 cd 34 ef 56", canon},
		{"  " + canon + "\n", canon},
		{"", ""},
	} {
		if got := normThumbprint(tc.in); got != tc.want {
			t.Errorf("normThumbprint(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Every X.509 registration looks up canonical thumbprints.
	if n := testing.AllocsPerRun(100, func() { normThumbprint(canon) }); n != 0 {
		t.Errorf("a canonical thumbprint allocates %v times", n)
	}
}

// TestSQLitePreparesStatements checks that SQLite's pools keep their
// queries prepared, those run inside transactions included, and that
// PostgreSQL's leaves that to pgx.
func TestSQLitePreparesStatements(t *testing.T) {
	s := openSQLite(t, Options{})
	ctx := t.Context()
	r := benchRegistration(1)
	if _, err := s.SaveRegistration(ctx, r, "", benchOp("op-1", r)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enrollment(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p     *pool
		query string
	}{{s.w, registrationsT.insert}, {s.w, upsertOperation}, {s.r, qEnrollment}} {
		if c.p.cached(c.query) == nil {
			t.Errorf("not prepared: %s", c.query)
		}
	}
	// The next transaction runs the pool's statements.
	if _, err := s.SaveRegistration(ctx, benchRegistration(2), "", benchOp("op-2", benchRegistration(2))); err != nil {
		t.Fatal(err)
	}
	if n := len(s.w.stmts); n > 4 {
		t.Errorf("the writer keeps %d statements after two saves", n)
	}
}
