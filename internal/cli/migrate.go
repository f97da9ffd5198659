package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

// openStore opens the database of --data/--store with opts, logging nowhere.
func openStore(ctx context.Context, l *localFlags, getenv func(string) string, opts sqlstore.Options) (*sqlstore.Store, string, error) {
	_, dsn := l.resolve(getenv)
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlstore.Open(ctx, dsn, opts)
	if err != nil {
		return nil, dsn, withHint(err, "check --data and --store (or DPSD_DATA and DPSD_STORE)")
	}
	return st, dsn, nil
}

func newMigrateCmd(e *env) *cobra.Command {
	var lf localFlags
	var check bool
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Bring the database schema up to this dpsd's version",
		Long: `Apply the database migrations this dpsd has and the database lacks, and print the
schema version before and after. Running it again changes nothing.

'dpsd serve' migrates at start by default, under a PostgreSQL advisory lock so
that nodes starting together migrate once. Deployments that upgrade in an
explicit step start the nodes with --skip-migrate and run 'dpsd migrate' (with
the new binary, against the same --store) before starting them: a node then
refuses a schema older than itself instead of changing it. A dpsd older than
the schema refuses to start either way.

--check only reports: it exits 1 when the schema is not this dpsd's.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			st, _, err := openStore(ctx, &lf, e.getenv, sqlstore.Options{SkipSchemaCheck: true})
			if err != nil {
				return err
			}
			defer st.Close()
			cur, want, err := st.SchemaVersions(ctx)
			if err != nil {
				return withHint(err, "check --store: the database must be reachable")
			}
			switch {
			case cur > want:
				return withHint(fmt.Errorf("%w: the database is at version %d, this dpsd knows up to %d", sqlstore.ErrSchemaTooNew, cur, want),
					"use the dpsd that migrated it, or a newer one")
			case cur == want:
				_, err := fmt.Fprintf(e.stdout, "the database schema is at version %d, this dpsd's: nothing to do\n", cur)
				return err
			case check:
				return withHint(fmt.Errorf("%w: the database is at version %d, this dpsd needs %d", sqlstore.ErrSchemaTooOld, cur, want),
					"run 'dpsd migrate' without --check")
			}
			if err := st.Migrate(ctx); err != nil {
				return err
			}
			_, err = fmt.Fprintf(e.stdout, "migrated the database schema from version %d to %d\n", cur, want)
			return err
		},
	}
	lf.add(c)
	c.Flags().BoolVar(&check, "check", false, "only report whether the schema is this dpsd's (exit 1 when not)")
	return c
}
