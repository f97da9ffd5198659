package cli

// az-style flags of the management verbs: hidden az aliases, three-state
// flags (bare means true), list flags that take the following words, and the
// readers of flag values that name files or hold JSON.

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dpsd/dpsd/internal/pki"
)

// Flag annotations that drive normalizeArgs and the alias bookkeeping.
const (
	annAliasOf  = "dpsd:alias-of"      // a hidden az alias of another flag
	annOptional = "dpsd:optional-bool" // a three-state flag: bare means true
	annMulti    = "dpsd:multi"         // takes every following word (az nargs="+")
	// annArgs on a command names its positional argument: it takes at most
	// one, which flags().arg returns.
	annArgs = "dpsd:args"
)

// leafCmd prepares a verb: dpsd parses its flags itself (see parseLeafFlags)
// so that az's three-state flags (--verified, --edge-enabled) work both bare
// and with a value, and list flags take space-separated words as az does.
func leafCmd(c *cobra.Command) *cobra.Command {
	c.DisableFlagParsing = true
	c.Args = cobra.ArbitraryArgs
	c.PreRunE = parseLeafFlags
	// az's instance selectors, accepted so that az command lines paste
	// unchanged; dpsd picks the server with --login or --data instead.
	var ignored string
	fs := c.Flags()
	fs.StringVarP(&ignored, "resource-group", "g", "", "ignored (az compatibility)")
	fs.StringVar(&ignored, "dps-name", "", "ignored (az compatibility)")
	fs.StringVar(&ignored, "auth-type", "", "ignored (az compatibility)")
	for _, n := range azIgnored {
		fs.Lookup(n).Hidden = true
	}
	return c
}

// azIgnored are the az flags dpsd accepts and ignores.
var azIgnored = []string{"resource-group", "dps-name", "auth-type"}

// parseLeafFlags parses the arguments of a leaf command after normalizing
// them, then marks a flag as given when one of its aliases was, so that
// required-flag checks and Changed see through aliases.
func parseLeafFlags(c *cobra.Command, args []string) error {
	c.InheritedFlags() // merges the persistent flags of the parents into c.Flags()
	fs := c.Flags()
	c.DisableFlagParsing = false
	if err := c.ParseFlags(normalizeArgs(fs, args)); err != nil {
		return c.FlagErrorFunc()(c, err)
	}
	if help, _ := fs.GetBool("help"); help {
		return pflag.ErrHelp
	}
	if rest := fs.Args(); len(rest) > 1 || len(rest) == 1 && c.Annotations[annArgs] == "" {
		return usageError{fmt.Errorf("unexpected argument %q: every value is given with a flag", rest[0])}
	}
	for _, n := range azIgnored {
		if fs.Changed(n) {
			warnf(c.ErrOrStderr(), "--%s is ignored: dpsd serves one instance; choose the server with --login or --data", n)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if canon := f.Annotations[annAliasOf]; len(canon) == 1 && f.Changed {
			if cf := fs.Lookup(canon[0]); cf != nil {
				cf.Changed = true
			}
		}
	})
	return nil
}

// normalizeArgs rewrites a bare three-state flag (next argument absent or a
// flag) to --name=true, and joins the words following a list flag into one
// value (--rights A B → --rights=A B). Values of other flags are skipped, so
// a value that looks like a flag is left to pflag.
func normalizeArgs(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		var f *pflag.Flag
		switch {
		case strings.HasPrefix(a, "--") && len(a) > 2 && !strings.Contains(a, "="):
			f = fs.Lookup(a[2:])
		case len(a) == 2 && a[0] == '-' && a[1] != '-':
			f = fs.ShorthandLookup(a[1:])
		}
		if f == nil {
			out = append(out, a)
			continue
		}
		if f.Annotations[annOptional] != nil {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "-") {
				out = append(out, a+"=true")
				continue
			}
		}
		if f.Annotations[annMulti] != nil {
			j := i + 1
			for j < len(args) && !strings.HasPrefix(args[j], "-") {
				j++
			}
			if j > i+1 {
				out = append(out, a+"="+strings.Join(args[i+1:j], " "))
				i = j - 1
				continue
			}
		}
		out = append(out, a)
		if f.NoOptDefVal == "" && i+1 < len(args) {
			out = append(out, args[i+1])
			i++
		}
	}
	return out
}

// flags adds flags with az's hidden aliases to one command.
type flags struct{ fs *pflag.FlagSet }

func flagsOf(c *cobra.Command) flags { return flags{c.Flags()} }

// aliases registers hidden long aliases of the flag name, sharing its value.
func (f flags) aliases(name string, aliases ...string) {
	fl := f.fs.Lookup(name)
	for _, a := range aliases {
		long := a
		if len(a) == 1 {
			// A one-letter alias is a shorthand (-r); pflag needs a long
			// name for it too, which nobody types.
			long = "az-alias-" + name + "-" + a
			f.fs.VarP(fl.Value, long, a, "alias of --"+name)
		} else {
			f.fs.Var(fl.Value, a, "alias of --"+name)
		}
		af := f.fs.Lookup(long)
		af.Hidden = true
		af.NoOptDefVal = fl.NoOptDefVal
		_ = f.fs.SetAnnotation(long, annAliasOf, []string{name})
		for k, v := range fl.Annotations {
			_ = f.fs.SetAnnotation(long, k, v)
		}
	}
}

func (f flags) str(p *string, name, short, usage string, aliases ...string) {
	f.fs.StringVarP(p, name, short, "", usage)
	f.aliases(name, aliases...)
}

func (f flags) int(p *int, name, usage string, aliases ...string) {
	f.fs.IntVar(p, name, 0, usage)
	f.aliases(name, aliases...)
}

// optBool adds a three-state flag: absent, --name (true), --name true|false.
func (f flags) optBool(p *optBool, name, usage string, aliases ...string) {
	f.fs.Var(p, name, usage)
	_ = f.fs.SetAnnotation(name, annOptional, []string{"true"})
	f.aliases(name, aliases...)
}

// list adds a flag taking space- or comma-separated words, repeatable.
func (f flags) list(p *listValue, name, usage string, aliases ...string) {
	f.fs.Var(p, name, usage)
	_ = f.fs.SetAnnotation(name, annMulti, []string{"true"})
	f.aliases(name, aliases...)
}

func (f flags) required(names ...string) {
	for _, n := range names {
		_ = cobra.MarkFlagRequired(f.fs, n)
		if fl := f.fs.Lookup(n); fl != nil {
			fl.Usage += " (required)"
		}
	}
}

func (f flags) changed(name string) bool { return f.fs.Changed(name) }

// arg is the positional argument of a command that takes one (annArgs),
// or "".
func (f flags) arg() string {
	if a := f.fs.Args(); len(a) > 0 {
		return a[0]
	}
	return ""
}

// optBool is az's three-state flag: unset, true or false. The value is
// required on the command line; normalizeArgs supplies it for a bare flag.
type optBool struct {
	set bool
	v   bool
}

func (b *optBool) String() string {
	if !b.set {
		return ""
	}
	return strconv.FormatBool(b.v)
}

func (b *optBool) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "y", "1", "on":
		b.set, b.v = true, true
	case "false", "no", "n", "0", "off":
		b.set, b.v = true, false
	default:
		return fmt.Errorf("use true or false")
	}
	return nil
}

func (b *optBool) Type() string { return "true|false" }

// isTrue reports that the flag was given as true.
func (b *optBool) isTrue() bool { return b.set && b.v }

// listValue collects words separated by spaces or commas, across repeats.
type listValue struct{ items []string }

func (l *listValue) String() string { return strings.Join(l.items, ",") }
func (l *listValue) Type() string   { return "list" }
func (l *listValue) Set(s string) error {
	l.items = append(l.items, splitList(s)...)
	return nil
}

// setIfGiven sets *dst to v unless v is empty: a flag not given leaves the
// field as it is.
func setIfGiven(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// readCertificateFile reads the first certificate of a PEM or DER file and
// returns it as PEM.
func readCertificateFile(flag, path string) (string, *x509.Certificate, error) {
	certs, err := pki.ReadCertificatesFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return "", nil, withHint(fmt.Errorf("%s: %w", flag, err), "check the path given to %s", flag)
		}
		return "", nil, withHint(fmt.Errorf("%s: %v", flag, err), "%s takes a certificate file, PEM (-----BEGIN CERTIFICATE-----) or DER", flag)
	}
	if len(certs) == 0 {
		return "", nil, withHint(fmt.Errorf("%s: %s holds no certificate", flag, path), "%s takes a certificate file, PEM (-----BEGIN CERTIFICATE-----) or DER", flag)
	}
	return string(pki.EncodePEM(certs[0])), certs[0], nil
}

// jsonObjectArg reads a JSON object given inline or as the path of a file
// holding one, as az does.
func jsonObjectArg(flag, v string) (json.RawMessage, error) {
	data := []byte(strings.TrimSpace(v))
	if len(data) > 0 && data[0] != '{' {
		if b, err := os.ReadFile(v); err == nil {
			data = bytes.TrimSpace(b)
		}
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		why := "it is not a JSON object"
		if err != nil {
			why = err.Error()
		}
		return nil, withHint(fmt.Errorf("%s: invalid JSON: %s", flag, why), `%s takes a JSON object, e.g. '{"location": "lab"}', or the path of a file holding one`, flag)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		return nil, err
	}
	return json.RawMessage(buf.Bytes()), nil
}

// oneOf matches v case-insensitively against choices and returns the
// canonical spelling.
func oneOf(flag, v string, choices ...string) (string, error) {
	for _, c := range choices {
		if strings.EqualFold(v, c) {
			return c, nil
		}
	}
	return "", withHint(fmt.Errorf("%s %q is not one of %s", flag, v, strings.Join(choices, ", ")), "use %s %s", flag, strings.Join(choices, "|"))
}
