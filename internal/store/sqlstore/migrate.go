package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

// ErrSchemaTooNew means the database was migrated by a newer dpsd than this
// one; running an older binary on it could lose data.
var ErrSchemaTooNew = errors.New("database schema is newer than this dpsd")

// ErrSchemaTooOld means the database needs `dpsd migrate` (Open with
// SkipMigrate found pending migrations).
var ErrSchemaTooOld = errors.New("database schema is older than this dpsd")

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded migrations/NNNN_name.sql file.
type migration struct {
	version int
	name    string
	text    string // a template; see dialect
}

// migrations are the embedded migrations in version order.
var migrations = mustLoadMigrations()

func mustLoadMigrations() []migration {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	var ms []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			panic(fmt.Sprintf("sqlstore: migration %s is not named NNNN_name.sql", e.Name()))
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			panic(err)
		}
		ms = append(ms, migration{version: v, name: e.Name(), text: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			panic(fmt.Sprintf("sqlstore: migrations %s and %s share a version", ms[i-1].name, ms[i].name))
		}
	}
	return ms
}

// SchemaVersion is the schema version this binary writes.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// advisoryLockKey serializes migrations of one PostgreSQL database across
// nodes ("dpsd" in ASCII).
const advisoryLockKey = 0x64707364

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied BIGINT NOT NULL
)`

// Migrate applies the pending migrations, each in its own transaction. On
// PostgreSQL it holds an advisory lock meanwhile, so that nodes starting
// together migrate once; on SQLite the writer's BEGIN IMMEDIATE does the same
// for processes sharing the file. It fails with ErrSchemaTooNew when the
// database is ahead of this binary.
func (s *Store) Migrate(ctx context.Context) error {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	defer conn.Close()

	if s.d.advisoryLock {
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, advisoryLockKey); err != nil {
			return s.fail(ctx, "migrate: lock", err)
		}
		defer func() {
			// Unlock even if ctx is done; the lock would otherwise live as
			// long as the pooled connection.
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, advisoryLockKey); err != nil {
				// Discard the connection, and the lock with it.
				conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}

	if _, err := conn.ExecContext(ctx, createMigrationsTable); err != nil {
		return s.fail(ctx, "migrate", err)
	}
	cur, err := schemaVersion(ctx, conn)
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	if cur > SchemaVersion() {
		return fmt.Errorf("%w: the database is at version %d, this dpsd knows up to %d; upgrade dpsd", ErrSchemaTooNew, cur, SchemaVersion())
	}
	for _, m := range migrations {
		if m.version <= cur {
			continue
		}
		applied, err := s.apply(ctx, conn, m)
		if err != nil {
			return err
		}
		if applied {
			s.log.Info("applied database migration", "version", m.version, "name", m.name)
		}
	}
	return nil
}

// apply runs one migration unless another process applied it since we
// looked; the check is inside the transaction, which SQLite's BEGIN IMMEDIATE
// and PostgreSQL's advisory lock serialize.
func (s *Store) apply(ctx context.Context, conn *sql.Conn, m migration) (bool, error) {
	text, err := render(m, s.d)
	if err != nil {
		return false, err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, s.fail(ctx, "migrate", err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
		return false, s.fail(ctx, "migrate", err)
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, text); err != nil {
		return false, s.fail(ctx, "migrate: "+m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)`, m.version, s.stamp()); err != nil {
		return false, s.fail(ctx, "migrate: "+m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, s.fail(ctx, "migrate: "+m.name, err)
	}
	return true, nil
}

// checkSchema fails unless the database is at exactly this binary's version.
func (s *Store) checkSchema(ctx context.Context) error {
	cur, err := schemaVersion(ctx, s.r)
	if err != nil && !missingTable(err) {
		return s.fail(ctx, "check schema", err)
	}
	switch {
	case cur > SchemaVersion():
		return fmt.Errorf("%w: the database is at version %d, this dpsd knows up to %d; upgrade dpsd", ErrSchemaTooNew, cur, SchemaVersion())
	case cur < SchemaVersion():
		return fmt.Errorf("%w: the database is at version %d, this dpsd needs %d; run dpsd migrate", ErrSchemaTooOld, cur, SchemaVersion())
	}
	return nil
}

func schemaVersion(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, err
	}
	return int(v.Int64), nil
}

// missingTable reports whether err says schema_migrations does not exist.
func missingTable(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "no such table") || // SQLite
		strings.Contains(msg, "SQLSTATE 42P01") // PostgreSQL undefined_table
}

func render(m migration, d *dialect) (string, error) {
	t, err := template.New(m.name).Option("missingkey=error").Parse(m.text)
	if err != nil {
		return "", fmt.Errorf("sqlstore: migration %s: %w", m.name, err)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("sqlstore: migration %s: %w", m.name, err)
	}
	return b.String(), nil
}
