package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/dpsd/dpsd/internal/server"
)

// TestServeSettings resolves the settings of `dpsd serve` from flags, the
// environment and the config file: each source means the same, flags win
// over the environment, which wins over the file, and what is not set is
// server.Defaults.
func TestServeSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		file string // the config file's content, "" for none
		want func(*server.Config)
		// retries is what the store is told (sqlstore: negative for none).
		retries int
		err     string
	}{
		{name: "defaults", want: func(*server.Config) {}, retries: 3},
		{name: "store-retries 0 flag", args: []string{"--store-retries", "0"}, want: noRetries, retries: -1},
		{name: "store-retries 0 env", env: map[string]string{"DPSD_STORE_RETRIES": "0"}, want: noRetries, retries: -1},
		{name: "store-retries 0 file", file: `{"store-retries": 0}`, want: noRetries, retries: -1},
		{name: "store-retries 5", args: []string{"--store-retries=5"}, want: func(c *server.Config) { c.StoreRetries = 5 }, retries: 5},
		{
			name: "flag over env over file",
			args: []string{"--retry-after", "7"}, env: map[string]string{"DPSD_RETRY_AFTER": "8", "DPSD_LOG_LEVEL": "debug"},
			file: `{"retry-after": 9, "log-level": "warn", "log-format": "json"}`,
			want: func(c *server.Config) { c.RetryAfter, c.LogLevel, c.LogFormat = 7, "debug", "json" }, retries: 3,
		},
		{
			name: "lists", env: map[string]string{"DPSD_HOSTNAME": "a.example,10.0.0.5"},
			want: func(c *server.Config) { c.HostNames = []string{"a.example", "10.0.0.5"} }, retries: 3,
		},
		{
			name: "list in file", file: `{"hostname": ["a.example", "10.0.0.5"], "azure-strict": true}`,
			want: func(c *server.Config) { c.HostNames, c.AzureStrict = []string{"a.example", "10.0.0.5"}, true }, retries: 3,
		},
		{
			name: "device certificate and token rules", args: []string{"--min-rsa-bits", "3072", "--min-ec-bits", "384", "--max-chain-length", "4", "--max-sas-lifetime", "1h"},
			want: func(c *server.Config) {
				c.MinRSABits, c.MinECBits, c.MaxChainLength, c.MaxSASLifetime = 3072, 384, 4, time.Hour
			}, retries: 3,
		},
		{name: "rsa below 1024", args: []string{"--min-rsa-bits", "512"}, err: "--min-rsa-bits 512 is outside 1024 to 16384"},
		{
			name: "throttling and faults", args: []string{"--throttle-registrations", "1000/min", "--throttle-polls=5/10s", "--fault", "503,fraction=0.2,on=register"},
			env: map[string]string{"DPSD_THROTTLE_SERVICE": "1000/min"},
			want: func(c *server.Config) {
				c.ThrottleRegistrations, c.ThrottlePolls, c.ThrottleService = "1000/min", "5/10s", "1000/min"
				c.Faults = []string{"503,fraction=0.2,on=register"}
			}, retries: 3,
		},
		{
			name: "faults in the file", file: `{"fault": ["drop,on=poll", "delay=1s"]}`,
			want: func(c *server.Config) { c.Faults = []string{"drop,on=poll", "delay=1s"} }, retries: 3,
		},
		{name: "bad rate", args: []string{"--throttle-polls", "5 per 10s"}, err: "--throttle-polls: rate"},
		{name: "bad fault", args: []string{"--fault", "418"}, err: `--fault: fault "418": action "418" is not 429, 500, 503`},
		{name: "mqtt off", args: []string{"--mqtt-addr", ""}, want: func(c *server.Config) { c.MQTTAddr = "" }, retries: 3},
		{name: "pprof", args: []string{"--pprof-addr", "127.0.0.1:6060"}, want: func(c *server.Config) { c.PprofAddr = "127.0.0.1:6060" }, retries: 3},
		{name: "pprof not host:port", env: map[string]string{"DPSD_PPROF_ADDR": "6060"}, err: `--pprof-addr "6060" is not host:port`},
		// Empty and zero values that mean nothing of their own get the default.
		{name: "zero is default", args: []string{"--retry-after", "0", "--log-format", "", "--store-timeout", "0"}, want: func(*server.Config) {}, retries: 3},
		{name: "too many retries", args: []string{"--store-retries", "21"}, err: "--store-retries 21 is more than 20"},
		{name: "crl base url", args: []string{"--crl-base-url", "https://dps.example.com:8443"},
			want: func(c *server.Config) { c.CRLBaseURL = "https://dps.example.com:8443" }, retries: 3},
		{name: "crl base url not absolute", args: []string{"--crl-base-url", "dps.example.com"}, err: `--crl-base-url "dps.example.com" is not an absolute http(s) URL`},
		{name: "crl base url with a query", env: map[string]string{"DPSD_CRL_BASE_URL": "https://dps.example.com/?a=1"}, err: "without query"},
		{name: "unknown key", file: `{"https_addr": ":1"}`, err: `unknown setting "https_addr"`},
		{name: "bad env", env: map[string]string{"DPSD_RETRY_AFTER": "soon"}, err: `DPSD_RETRY_AFTER="soon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				p := filepath.Join(t.TempDir(), "dpsd.json")
				if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append([]string{"--config", p}, args...)
			}
			var sf serveFlags
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			sf.add(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			cfg, err := sf.resolve(fs, func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want an error with %q", cfg, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := server.Defaults()
			tc.want(&want)
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("got  %+v\nwant %+v", cfg, want)
			}
			if got := cfg.StoreOptions(nil).Retries; got != tc.retries {
				t.Errorf("store retries %d, want %d", got, tc.retries)
			}
		})
	}
}

func noRetries(c *server.Config) { c.StoreRetries = 0 }
