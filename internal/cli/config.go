package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// configFlag names the config file; it is a flag only, not an environment
// variable or a key of the file.
const configFlag = "config"

// envName is the environment variable of the flag name: DPSD_ and the name
// in upper case with '_' for '-'.
func envName(flag string) string {
	return "DPSD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnvAndFile fills every flag the command line did not set from the
// environment (envName, e.g. DPSD_HTTPS_ADDR) and then from the JSON config
// file (an object keyed by flag name). Precedence: flag, environment, file,
// default.
func applyEnvAndFile(fs *pflag.FlagSet, getenv func(string) string, file string) error {
	var fromFile map[string]json.RawMessage
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return withHint(err, "check --config")
		}
		if err := json.Unmarshal(b, &fromFile); err != nil {
			return withHint(fmt.Errorf("config file %s: %v", file, err), `the config file is a JSON object keyed by flag name, e.g. {"https-addr": ":8443", "hostname": ["dps.example.com"]}`)
		}
		for k := range fromFile {
			if f := fs.Lookup(k); f == nil || k == configFlag {
				return withHint(fmt.Errorf("config file %s: unknown setting %q", file, k), "settings are the flags of 'dpsd serve --help', without the dashes")
			}
		}
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == configFlag {
			return
		}
		env := envName(f.Name)
		if v := getenv(env); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", env, v, e)
			}
			return
		}
		raw, ok := fromFile[f.Name]
		if !ok {
			return
		}
		var vals []string
		var list []any
		var one any
		if json.Unmarshal(raw, &list) == nil {
			for _, v := range list {
				vals = append(vals, fmt.Sprint(v))
			}
		} else if json.Unmarshal(raw, &one) == nil {
			vals = []string{fmt.Sprint(one)}
		}
		for _, v := range vals {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("config file %s: %s=%q: %v", file, f.Name, v, e)
				return
			}
		}
	})
	return err
}
