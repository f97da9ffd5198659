package cli

// Shared machinery of the management commands (enrollment, enrollment-group,
// certificate, linked-hub, registration, policy, show, update): az-style flag
// aliases and three-state flags, turning service errors into error and hint
// lines, paging through queries, and reading files and JSON at the edge.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/svcclient"
)

// Flag annotations that drive normalizeArgs and the alias bookkeeping.
const (
	annAliasOf  = "dpsd:alias-of"      // a hidden az alias of another flag
	annOptional = "dpsd:optional-bool" // a three-state flag: bare means true
	annMulti    = "dpsd:multi"         // takes every following word (az nargs="+")
)

// nounCmd returns a command that groups the verbs of one resource and carries
// the connection flags for all of them.
func nounCmd(use, short, long string, cf *connFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.NoArgs,
		RunE:  func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	if cf != nil {
		cf.add(c)
	}
	return c
}

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
	if rest := fs.Args(); len(rest) > 0 {
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

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// dash renders an empty value as "-" in tables.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// target names the record a command works on, for hints.
type target struct {
	cmd    string // dpsd command: "enrollment", "certificate"
	noun   string // "enrollment", "CA certificate"
	idFlag string // "--enrollment-id"
	id     string
}

func (t target) ref() string {
	if t.id == "" {
		return ""
	}
	return " " + t.idFlag + " " + t.id
}

// apiError turns a failed call into an error line and a hint saying what to
// do next.
func apiError(err error, cl *svcclient.Client, t target) error {
	if err == nil {
		return nil
	}
	var se *svcclient.Error
	if errors.As(err, &se) {
		msg := strings.TrimSpace(se.Details.Message)
		var e error
		if msg != "" {
			e = fmt.Errorf("%s (HTTP %d, errorCode %d)", msg, se.Status, se.Details.ErrorCode)
		} else {
			e = fmt.Errorf("HTTP %d %s: %s", se.Status, http.StatusText(se.Status), strings.TrimSpace(se.Body))
		}
		return withHint(e, "%s", statusHint(se, t))
	}
	host := ""
	if cl != nil {
		host = cl.Host()
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return withHint(fmt.Errorf("cannot reach the service at %s: connection refused", host),
			"is 'dpsd serve' running? start it, or give --login with the connection string of a running server")
	case errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return withHint(fmt.Errorf("the server at %s is not trusted: %v", host, unwrapURL(err)),
			"give --ca-file with the server's CA certificate ('dpsd info' on the server prints serverCAFile)")
	case errors.As(err, &dns):
		return withHint(fmt.Errorf("cannot resolve %s: %v", host, unwrapURL(err)), "check HostName in --login")
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return withHint(fmt.Errorf("the service at %s did not answer in time: %v", host, unwrapURL(err)), "check that the server is running and reachable")
	}
	return withHint(unwrapURL(err), "check --login and that the server is reachable")
}

// unwrapURL drops the `Put "https://...": ` prefix net/http adds.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

func statusHint(se *svcclient.Error, t target) string {
	switch se.Status {
	case http.StatusBadRequest:
		return fmt.Sprintf("fix the value the server names and retry; see 'dpsd %s --help'", t.cmd)
	case http.StatusUnauthorized, http.StatusForbidden:
		return "check --login / the policy's rights: the connection string's policy must exist, its key must match, and it must grant the right named above ('dpsd policy list' shows the rights)"
	case http.StatusNotFound:
		if t.cmd == "registration" {
			return "the device has not registered, or its record was deleted; 'dpsd registration list --group-id GROUP' lists a group's records"
		}
		return fmt.Sprintf("check the name; 'dpsd %s list' lists them", t.cmd)
	case http.StatusConflict:
		return fmt.Sprintf("it already exists: use 'dpsd %s update%s' to change it, or delete it first", t.cmd, t.ref())
	case http.StatusPreconditionFailed:
		return fmt.Sprintf("someone changed it since the etag was read: run 'dpsd %s show%s' and retry with its current etag (or without --etag)", t.cmd, t.ref())
	case http.StatusRequestEntityTooLarge:
		return "the request is too large: DPS accepts at most 96 KB"
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return "the server is busy or its database is unavailable; retry in a moment"
	}
	if se.Status >= 500 {
		return fmt.Sprintf("the server failed; its log has the details (trackingId %s)", dash(se.Details.TrackingID))
	}
	return "see the server's message above"
}

// do calls the service and maps a failure with apiError.
func do(ctx context.Context, cl *svcclient.Client, t target, req svcclient.Request, out any) (*http.Response, error) {
	resp, err := cl.Do(ctx, req, out)
	if err != nil {
		return resp, apiError(err, cl, t)
	}
	return resp, nil
}

// paging are the flags of a list command.
type paging struct {
	top      int
	pageSize int
}

func (p *paging) add(f flags) {
	f.fs.IntVar(&p.top, "top", -1, "maximum number of items to return; -1 for all")
	f.fs.IntVar(&p.pageSize, "page-size", 0, "items per request (x-ms-max-item-count); default: --top, or the server's page size")
}

func (p *paging) check() error {
	if p.top == 0 || p.top < -1 {
		return withHint(fmt.Errorf("--top %d is not a positive number or -1", p.top), "use --top N for at most N items, or --top -1 for all")
	}
	if p.pageSize < 0 || p.pageSize > 1000 {
		return withHint(fmt.Errorf("--page-size %d is outside 1 to 1000", p.pageSize), "omit --page-size to let the server choose")
	}
	return nil
}

// queryAll pages through a query: each request asks for at most the page
// size (and no more than --top still needs) and sends back the continuation
// token of the previous page; the last page has none.
func queryAll(ctx context.Context, cl *svcclient.Client, t target, path string, body any, p paging) ([]json.RawMessage, error) {
	var items []json.RawMessage
	cont := ""
	seen := map[string]bool{}
	for {
		h := http.Header{}
		n := p.pageSize
		if p.top > 0 {
			if left := p.top - len(items); n == 0 || n > left {
				n = left
			}
		}
		if n > 0 {
			h.Set("x-ms-max-item-count", strconv.Itoa(n))
		}
		if cont != "" {
			h.Set("x-ms-continuation", cont)
		}
		var page []json.RawMessage
		resp, err := do(ctx, cl, t, svcclient.Request{Method: http.MethodPost, Path: path, Header: h, Body: body}, &page)
		if err != nil {
			return nil, err
		}
		items = append(items, page...)
		cont = resp.Header.Get("x-ms-continuation")
		if cont == "" || p.top > 0 && len(items) >= p.top {
			break
		}
		if seen[cont] || len(page) == 0 {
			return nil, fmt.Errorf("the server returned continuation token %q twice or with an empty page; stopping", cont)
		}
		seen[cont] = true
	}
	if p.top > 0 && len(items) > p.top {
		items = items[:p.top]
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	return items, nil
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

// writeRaw prints a JSON answer indented, keeping the service's field order.
func writeRaw(w io.Writer, raw json.RawMessage) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage("null")
	}
	return writeJSON(w, raw)
}

// compactJSON renders a JSON value on one line for a table.
func compactJSON(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return ""
	}
	var buf bytes.Buffer
	if json.Compact(&buf, t) != nil {
		return string(t)
	}
	return buf.String()
}

// warnf prints a warning line; the command goes on.
func warnf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "dpsd: warning: "+format+"\n", args...)
}

// listValueCmd builds a list command for an ARM-shaped list ({"value": [...]}):
// the service's JSON with --output json, else a table of row(item).
func listValueCmd[T any](e *env, cf *connFlags, use, short, path string, t target, header []string, row func(T) []string) *cobra.Command {
	var output string
	c := &cobra.Command{Use: use, Short: short}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(output); err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, t, svcclient.Request{Method: http.MethodGet, Path: path}, &raw); err != nil {
			return err
		}
		if output == outputJSON {
			return writeRaw(e.stdout, raw)
		}
		var list struct{ Value []T }
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("decoding the answer of GET %s: %w", path, err)
		}
		rows := make([][]string, 0, len(list.Value))
		for _, v := range list.Value {
			rows = append(rows, row(v))
		}
		return writeTable(e.stdout, header, rows)
	}
	addOutputFlag(c, &output)
	return leafCmd(c)
}
