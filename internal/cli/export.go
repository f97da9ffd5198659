package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/dump"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
)

const secretsNote = "it holds the server CA's private key, the policy keys, every enrollment's keys and the hubs' connection strings"

func newExportCmd(e *env) *cobra.Command {
	var lf localFlags
	c := &cobra.Command{
		Use:   "export FILE",
		Short: "Write the instance and every record to a JSON-lines file, for 'dpsd import'",
		Long: `Write the instance of the database (--data or --store) to FILE, one JSON object a
line: its ID scope, server CA and server certificate with their keys, then the
shared access policies, CA certificates, linked hubs, enrollment groups,
individual enrollments and registration records, each with its etag and
timestamps. 'dpsd import' writes them into another database, SQLite or
PostgreSQL, so that devices and service clients cannot tell the difference:
the same ID scope, the same server CA, the same keys.

FILE - writes to standard output. Otherwise the file is written readable by
its owner only (0600), under a temporary name until it is complete: it holds
the server CA's private key, the policy keys, every enrollment's keys and the
hubs' connection strings. Keep it like a private key.

Export reads the database page by page, so memory stays small whatever its
size, and it may run while dpsd serves; records written meanwhile may or may
not be in the file. For a point-in-time copy, stop the nodes first (or use
pg_dump on PostgreSQL). Operations are not exported: they expire within a day.
A progress bar is drawn on standard error when it is a terminal.`,
		Args: exactArgs(1, "give the file to write, or - for standard output"),
		RunE: func(c *cobra.Command, args []string) (err error) {
			ctx := c.Context()
			st, _, err := openStore(ctx, &lf, e.getenv, sqlstore.Options{SkipMigrate: true})
			if errors.Is(err, sqlstore.ErrSchemaTooOld) {
				return withHint(err, "run 'dpsd migrate' on the database first")
			}
			if err != nil {
				return err
			}
			defer st.Close()

			name := args[0]
			var w io.Writer = e.stdout
			report := e.stdout
			var tmp *os.File
			if name == "-" {
				report = e.stderr
			} else {
				// CreateTemp makes the file 0600 before anything is in it.
				tmp, err = os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".partial-*")
				if err != nil {
					return withHint(err, "check that the directory of %s exists and is writable", name)
				}
				defer func() {
					if err != nil {
						tmp.Close()
						os.Remove(tmp.Name())
					}
				}()
				w = tmp
			}
			bar := newProgressBar(e.stderr, "exporting")
			var id string
			n, err := dump.Export(ctx, st, w, dump.ExportOptions{
				DpsdVersion: Version,
				Header:      func(h *dump.Header) { id = h.IDScope; bar.setTotal(dump.Total(&h.Counts)) },
				Progress:    bar.update,
			})
			if n != nil {
				bar.finish(dump.Total(n))
			}
			if err != nil {
				return err
			}
			if tmp != nil {
				if err := tmp.Sync(); err != nil {
					return err
				}
				if err := tmp.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp.Name(), name); err != nil {
					return err
				}
				name = fmt.Sprintf("%s (mode 0600: %s)", name, secretsNote)
			} else {
				name = "standard output (" + secretsNote + ")"
			}
			_, err = fmt.Fprintf(report, "exported instance %s: %s\nto %s\n", id, describeCounts(n), name)
			return err
		},
	}
	lf.add(c)
	return c
}

func newImportCmd(e *env) *cobra.Command {
	var lf localFlags
	var force bool
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Write an export of 'dpsd export' into the database",
		Long: `Write the instance and the records of FILE, written by 'dpsd export', into the
database (--data or --store; its schema is created if it is empty), keeping
their etags and timestamps. To move from SQLite to PostgreSQL:

  dpsd export --data ./dpsd-data dpsd-export.jsonl
  dpsd import --store postgres://dpsd@db/dpsd dpsd-export.jsonl
  dpsd serve --store postgres://dpsd@db/dpsd ...

Devices keep registering unchanged: the ID scope, the server CA and the keys
are the exported ones, and a device's record keeps its creation time.

An empty database takes the exported instance. A database that serves another
instance is refused unless --force, which replaces its instance (ID scope,
server CA) and keeps its records, overwriting those with the keys of the
export's. Everything is written in one transaction: an import that fails,
anywhere in the file, leaves the database as it was. Nodes serving the database
apply the imported records to their next registration; after --force, restart
them, so that they serve the imported instance. FILE - reads standard
input. A progress bar is drawn on standard error when it is a terminal.`,
		Args: exactArgs(1, "give the file written by 'dpsd export', or - for standard input"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			var r io.Reader = e.stdin
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return withHint(err, "give the file written by 'dpsd export'")
				}
				defer f.Close()
				r = f
			}
			st, _, err := openStore(ctx, &lf, e.getenv, sqlstore.Options{})
			if err != nil {
				return err
			}
			defer st.Close()
			bar := newProgressBar(e.stderr, "importing")
			var id string
			n, err := dump.Import(ctx, st, r, dump.ImportOptions{
				Force:    force,
				Header:   func(h *dump.Header) { id = h.IDScope; bar.setTotal(dump.Total(&h.Counts)) },
				Progress: bar.update,
			})
			if n != nil {
				bar.finish(dump.Total(n))
			}
			if errors.Is(err, dump.ErrOtherInstance) {
				return withHint(err, "import into an empty database, or give --force to replace the instance it serves (its records are kept)")
			}
			if err != nil {
				return withHint(err, "nothing was written: fix the cause and import the file again")
			}
			if _, err := fmt.Fprintf(e.stdout, "imported instance %s: %s\n", id, describeCounts(n)); err != nil || !force {
				return err
			}
			_, err = fmt.Fprintln(e.stdout, "restart the dpsd nodes on this database so that they serve it")
			return err
		},
	}
	lf.add(c)
	c.Flags().BoolVar(&force, "force", false, "replace the instance of a database that serves another one")
	return c
}

// exactArgs is cobra.ExactArgs with a hint.
func exactArgs(n int, hint string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return withHint(fmt.Errorf("%s takes %d argument(s), got %d", c.CommandPath(), n, len(args)), "%s", hint)
		}
		return nil
	}
}

func describeCounts(c *store.Counts) string {
	parts := []string{}
	for _, p := range []struct {
		n        int64
		what     string
		whats    string
		optional bool // said only when there are some
	}{
		{c.Policies, "policy", "policies", false},
		{c.CACertificates, "CA certificate", "CA certificates", false},
		{c.LinkedHubs, "linked hub", "linked hubs", false},
		{c.Groups, "enrollment group", "enrollment groups", false},
		{c.Enrollments, "enrollment", "enrollments", false},
		{c.Registrations, "registration record", "registration records", false},
		{c.IssuingCAs, "issuing CA", "issuing CAs", true},
		{c.IssuedCertificates, "issued certificate", "issued certificates", true},
	} {
		if p.optional && p.n == 0 {
			continue
		}
		w := p.whats
		if p.n == 1 {
			w = p.what
		}
		parts = append(parts, fmt.Sprintf("%d %s", p.n, w))
	}
	return strings.Join(parts, ", ")
}
