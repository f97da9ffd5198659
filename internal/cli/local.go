package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/svcclient"
)

// instanceInfo is what `dpsd info` prints and what management commands use
// to reach the local server when no --login is given.
type instanceInfo struct {
	IDScope                 string `json:"idScope"`
	DeviceEndpoint          string `json:"deviceEndpoint"`
	ServiceEndpoint         string `json:"serviceEndpoint"`
	ServiceConnectionString string `json:"serviceConnectionString"`
	ServerCAFile            string `json:"serverCAFile"`
	MQTTEndpoint            string `json:"mqttEndpoint,omitempty"`
}

// localFlags locate the local instance.
type localFlags struct {
	data  string
	store string
}

func (l *localFlags) add(c *cobra.Command) {
	c.PersistentFlags().StringVar(&l.data, "data", "", "data directory of the local server (default "+server.Defaults().DataDir+", or DPSD_DATA)")
	c.PersistentFlags().StringVar(&l.store, "store", "", "database DSN of the local server (default: SQLite in the data directory, or DPSD_STORE)")
}

func (l *localFlags) resolve(getenv func(string) string) (dataDir, dsn string) {
	dataDir = cmp.Or(l.data, getenv("DPSD_DATA"), server.Defaults().DataDir)
	cfg := server.Config{DataDir: dataDir, Store: cmp.Or(l.store, getenv("DPSD_STORE"))}
	return dataDir, cfg.StoreDSN()
}

// readLocal reads the instance in the local data directory or store.
func readLocal(ctx context.Context, l *localFlags, getenv func(string) string) (*instanceInfo, error) {
	dataDir, dsn := l.resolve(getenv)
	if !strings.Contains(dsn, "://") {
		if _, err := os.Stat(dsn); errors.Is(err, os.ErrNotExist) {
			return nil, withHint(fmt.Errorf("no dpsd instance in %s", dataDir), "start one with 'dpsd serve --data %s', or give --login CONNECTION_STRING", dataDir)
		}
	}
	// Reading must not migrate: deployments that migrate explicitly
	// (serve --skip-migrate) would see a newer CLI change their schema.
	st, err := sqlstore.Open(ctx, dsn, sqlstore.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), SkipMigrate: true})
	if errors.Is(err, sqlstore.ErrSchemaTooOld) {
		return nil, withHint(err, "start 'dpsd serve' on it (it migrates at start), or run 'dpsd migrate'")
	}
	if err != nil {
		return nil, withHint(err, "check --data and --store")
	}
	defer st.Close()
	inst, err := st.Instance(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, withHint(fmt.Errorf("the database %s holds no instance yet", sqlstore.RedactDSN(dsn)), "start the server once with 'dpsd serve'")
	}
	if err != nil {
		return nil, err
	}
	pol, err := ownerPolicy(ctx, st)
	if err != nil {
		return nil, err
	}
	info := &instanceInfo{IDScope: inst.IDScope, DeviceEndpoint: "localhost:8443", ServiceEndpoint: "localhost:8443"}
	if s, err := server.ReadState(dataDir); err == nil {
		info.DeviceEndpoint, info.ServiceEndpoint, info.ServerCAFile = s.DeviceEndpoint, s.ServiceEndpoint, s.ServerCAFile
		info.MQTTEndpoint = s.MQTTEndpoint
	} else if abs, err := filepath.Abs(filepath.Join(dataDir, server.CAFile)); err == nil {
		info.ServerCAFile = abs
	}
	cs := sas.ConnectionString{HostName: info.ServiceEndpoint, SharedAccessKeyName: pol.Name, SharedAccessKey: pol.PrimaryKey}
	info.ServiceConnectionString = cs.String()
	return info, nil
}

// ownerPolicy returns provisioningserviceowner, or else any policy holding
// every right.
func ownerPolicy(ctx context.Context, st store.Store) (*store.Policy, error) {
	if p, err := st.Policy(ctx, dps.OwnerPolicyName); err == nil {
		return p, nil
	}
	ps, err := st.Policies(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if len(p.Rights) == len(dps.AllRights) {
			return p, nil
		}
	}
	return nil, withHint(errors.New("the instance has no policy with every right"), "give --login with a connection string of a policy that has the rights this command needs")
}

// connFlags choose the server a management command talks to.
type connFlags struct {
	localFlags
	login  string
	caFile string
}

func (f *connFlags) add(c *cobra.Command) {
	f.localFlags.add(c)
	c.PersistentFlags().StringVar(&f.login, "login", "", "service connection string (HostName=...;SharedAccessKeyName=...;SharedAccessKey=...), or DPSD_LOGIN; default: the local server")
	c.PersistentFlags().StringVar(&f.caFile, "ca-file", "", "CA certificate (PEM) to trust for the server, or DPSD_CA_FILE; default: the local server's CA")
}

// client returns a service API client: from --login/DPSD_LOGIN, or from the
// local data directory so that commands on the server's machine need no flags.
func (f *connFlags) client(ctx context.Context, getenv func(string) string) (*svcclient.Client, error) {
	login := cmp.Or(f.login, getenv("DPSD_LOGIN"))
	caFile := cmp.Or(f.caFile, getenv("DPSD_CA_FILE"))
	if login == "" {
		info, err := readLocal(ctx, &f.localFlags, getenv)
		if err != nil {
			return nil, err
		}
		login = info.ServiceConnectionString
		if caFile == "" {
			caFile = info.ServerCAFile
		}
	}
	var ca []byte
	newClient := svcclient.New
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, withHint(err, "check --ca-file / DPSD_CA_FILE")
		}
		ca = b
	} else {
		// --login without --ca-file: the system roots, and the local
		// server's CA when there is one (a server on this machine).
		dataDir, _ := f.localFlags.resolve(getenv)
		if b, err := os.ReadFile(filepath.Join(dataDir, server.CAFile)); err == nil {
			ca, newClient = b, svcclient.NewWithSystemRoots
		}
	}
	c, err := newClient(login, ca)
	if err != nil {
		return nil, withHint(fmt.Errorf("connection string: %w", err), "--login takes HostName=host:port;SharedAccessKeyName=NAME;SharedAccessKey=KEY (see 'dpsd info')")
	}
	return c, nil
}

func newInfoCmd(e *env) *cobra.Command {
	var lf localFlags
	var output string
	c := &cobra.Command{
		Use:   "info [FIELD]",
		Short: "Print the ID scope, endpoints, service connection string and CA file of the local instance",
		Long: `Print how to reach the local instance: its ID scope, the device and service
endpoints, the owner policy's service connection string (this command is the
only place dpsd prints a key), and the server CA file clients must trust.

With a FIELD (idScope, deviceEndpoint, serviceEndpoint, serviceConnectionString,
serverCAFile, mqttEndpoint), print only that value, for scripts: SCOPE=$(dpsd info idScope).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			info, err := readLocal(c.Context(), &lf, e.getenv)
			if err != nil {
				return err
			}
			fields := [][2]string{
				{"idScope", info.IDScope},
				{"deviceEndpoint", info.DeviceEndpoint},
				{"serviceEndpoint", info.ServiceEndpoint},
				{"serviceConnectionString", info.ServiceConnectionString},
				{"serverCAFile", info.ServerCAFile},
			}
			if info.MQTTEndpoint != "" {
				fields = append(fields, [2]string{"mqttEndpoint", info.MQTTEndpoint})
			}
			if len(args) == 1 {
				for _, f := range fields {
					if strings.EqualFold(f[0], args[0]) {
						_, err := fmt.Fprintln(e.stdout, f[1])
						return err
					}
				}
				return withHint(fmt.Errorf("unknown field %q", args[0]), "fields are idScope, deviceEndpoint, serviceEndpoint, serviceConnectionString, serverCAFile, mqttEndpoint")
			}
			if output == outputJSON {
				return writeJSON(e.stdout, info)
			}
			return writeFields(e.stdout, fields)
		},
	}
	lf.add(c)
	addOutputFlag(c, &output)
	return c
}
