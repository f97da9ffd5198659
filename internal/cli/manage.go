package cli

// Shared machinery of the management commands (enrollment, enrollment-group,
// certificate, linked-hub, registration, policy, show, update): the noun
// commands, the body every verb shares (make the service client, call,
// render), turning service errors into error and hint lines, and paging
// through queries.

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/svcclient"
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

// target names the record a command works on: where the service API keeps
// it, and how hints refer to it.
type target struct {
	cmd        string // dpsd command: "enrollment", "certificate"
	noun       string // "enrollment", "CA certificate"
	idFlag     string // "--enrollment-id"
	collection string // service API path of the records: "/enrollments"
	id         string
}

// The records of the management commands. The enrollment kinds are in
// manage_enrollment_record.go.
var (
	certificates  = target{cmd: "certificate", noun: "CA certificate", idFlag: "--certificate-name", collection: "/certificates"}
	linkedHubs    = target{cmd: "linked-hub", noun: "linked IoT hub", idFlag: "--linked-hub", collection: "/linkedHubs"}
	policies      = target{cmd: "policy", noun: "shared access policy", idFlag: "--policy-name", collection: "/policies"}
	registrations = target{cmd: "registration", noun: "registration record", idFlag: "--registration-id", collection: "/registrations"}
)

// of returns the target of the record with the given ID.
func (t target) of(id string) target {
	t.id = id
	return t
}

// path returns the service API path of the record, followed by suffix.
func (t target) path(suffix string) string {
	return t.collection + "/" + url.PathEscape(t.id) + suffix
}

func (t target) ref() string {
	if t.id == "" {
		return ""
	}
	return " " + t.idFlag + " " + t.id
}

// verb makes c a management verb, the one shape of them all: dpsd parses its
// flags itself (leafCmd), it has --output unless output is nil, and it runs
// by checking --output first, then calling body with the verb's flags and a
// session that makes the service client, calls and maps failures.
func verb(e *env, cf *connFlags, c *cobra.Command, output *string, body func(s *session, f flags) error) *cobra.Command {
	c.RunE = func(c *cobra.Command, _ []string) error {
		if output != nil {
			if err := checkOutput(*output); err != nil {
				return err
			}
		}
		return body(&session{env: e, ctx: c.Context(), cf: cf}, flagsOf(c))
	}
	if output != nil {
		addOutputFlag(c, output)
	}
	return leafCmd(c)
}

// session is a verb's way to the service. It makes the client on first use,
// so a verb that refuses its flags never reads the local instance, and turns
// a failed call into an error line with a hint.
type session struct {
	*env
	ctx context.Context
	cf  *connFlags
	cl  *svcclient.Client
}

func (s *session) client() (*svcclient.Client, error) {
	if s.cl == nil {
		cl, err := s.cf.client(s.ctx, s.getenv)
		if err != nil {
			return nil, err
		}
		s.cl = cl
	}
	return s.cl, nil
}

// do sends one request; hints about a failure name t.
func (s *session) do(t target, req svcclient.Request, out any) (*http.Response, error) {
	cl, err := s.client()
	if err != nil {
		return nil, err
	}
	resp, err := cl.Do(s.ctx, req, out)
	if err != nil {
		return resp, apiError(err, cl, t)
	}
	return resp, nil
}

// fetch sends one request and returns the answer as the service sent it.
func (s *session) fetch(t target, req svcclient.Request) (json.RawMessage, error) {
	var raw json.RawMessage
	_, err := s.do(t, req, &raw)
	return raw, err
}

// show sends one request and prints the record the service answers: as it
// came with --output json, else as the lines fields makes of it. what names
// the record in a decoding error.
func show[T any](s *session, t target, req svcclient.Request, output, what string, fields func(*T) [][2]string) error {
	raw, err := s.fetch(t, req)
	if err != nil {
		return err
	}
	return printRecord(s.stdout, output, raw, what, fields)
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
// token of the previous page; the last page has none. A query without a
// body is a GET (a list whose filters are in the path's query).
func queryAll(s *session, t target, path string, body any, p paging) ([]json.RawMessage, error) {
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
		method := http.MethodPost
		if body == nil {
			method = http.MethodGet
		}
		resp, err := s.do(t, svcclient.Request{Method: method, Path: path, Header: h, Body: body}, &page)
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

// listValueCmd builds the list verb of an ARM-shaped collection ({"value":
// [...]}): the service's JSON with --output json, else a table of row(item).
func listValueCmd[T any](e *env, cf *connFlags, short string, t target, header []string, row func(T) []string) *cobra.Command {
	var output string
	return verb(e, cf, &cobra.Command{Use: "list", Short: short}, &output, func(s *session, _ flags) error {
		raw, err := s.fetch(t, svcclient.Request{Method: http.MethodGet, Path: t.collection})
		if err != nil {
			return err
		}
		if output == outputJSON {
			return writeRaw(s.stdout, raw)
		}
		var list struct{ Value []T }
		if err := json.Unmarshal(raw, &list); err != nil {
			return fmt.Errorf("decoding the answer of GET %s: %w", t.collection, err)
		}
		rows := make([][]string, 0, len(list.Value))
		for _, v := range list.Value {
			rows = append(rows, row(v))
		}
		return writeTable(s.stdout, header, rows)
	})
}
