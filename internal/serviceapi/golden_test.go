package serviceapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/diff"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
)

// Golden files of the service API: testdata/golden/*.txt. Each file runs
// against its own fresh server, step after step. A step is
//
//	=== title
//	# optional comments
//	METHOD /path?query
//	Header: value
//
//	{"request": "body"}
//	----
//	STATUS
//	Selected-Header: value
//
//	{"expected": "body"}
//
// The request part is sent as written after expanding {{...}} (see expand);
// every request carries the owner policy's SAS token unless it sets
// Authorization itself ("Authorization: none" sends none). The expected part
// is what the server answered, normalized: values that change from run to
// run become numbered placeholders, numbered per file in order of first
// appearance (<etag1>, <key2>, <time3>, <code1>, <continuation1>), so the
// same value always gets the same placeholder and a new value a new one. A
// later request can send a placeholder's value back: {{etag1}}.
//
// A step whose request line is "SEED registration" writes a registration
// record straight into the store (the device API that makes them does not
// exist yet); it has no "----" part. Headers "Group:" and "If-Match:" are
// the record's enrollment group and the store precondition.
//
// go test ./internal/serviceapi -run TestGolden -update rewrites the expected
// parts from the server's answers (review the diff!).
var update = flag.Bool("update", false, "rewrite the expected responses of the golden files")

// goldenHeaders are the response headers a golden file shows. All of them
// are compared, so a header the server adds or drops (x-ms-continuation on
// the last page) fails the step.
var goldenHeaders = []string{"Content-Type", "ETag", "Location", "Retry-After", "x-ms-continuation", "x-ms-error-code", "x-ms-item-type", "x-ms-max-item-count"}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/golden")
	}
	fx := fixtures(t)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			t.Parallel()
			runGoldenFile(t, file, fx)
		})
	}
}

type goldenStep struct {
	title    string
	request  []string // raw lines after the title, up to ----
	response []string // raw expected lines
	line     int      // line number of the title
}

func (s *goldenStep) isSeed() bool {
	for _, l := range s.request {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		return strings.HasPrefix(l, "SEED ")
	}
	return false
}

func parseGolden(text string) (preamble []string, steps []*goldenStep, err error) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	var cur *goldenStep
	inResponse := false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "=== "):
			cur = &goldenStep{title: strings.TrimPrefix(l, "=== "), line: i + 1}
			steps = append(steps, cur)
			inResponse = false
		case cur == nil:
			preamble = append(preamble, l)
		case l == "----" && !inResponse:
			inResponse = true
		case inResponse:
			cur.response = append(cur.response, l)
		default:
			cur.request = append(cur.request, l)
		}
	}
	for _, s := range steps {
		s.request = trimBlank(s.request)
		s.response = trimBlank(s.response)
		if len(s.response) == 0 && !s.isSeed() && !*update {
			return nil, nil, fmt.Errorf("line %d: step %q has no expected response (run with -update)", s.line, s.title)
		}
	}
	return preamble, steps, nil
}

func trimBlank(ls []string) []string {
	for len(ls) > 0 && strings.TrimSpace(ls[len(ls)-1]) == "" {
		ls = ls[:len(ls)-1]
	}
	for len(ls) > 0 && strings.TrimSpace(ls[0]) == "" {
		ls = ls[1:]
	}
	return ls
}

func formatGolden(preamble []string, steps []*goldenStep) string {
	var sb strings.Builder
	for _, l := range trimBlank(preamble) {
		sb.WriteString(l + "\n")
	}
	for _, s := range steps {
		sb.WriteString("\n=== " + s.title + "\n")
		for _, l := range s.request {
			sb.WriteString(l + "\n")
		}
		if s.isSeed() {
			continue
		}
		sb.WriteString("----\n")
		for _, l := range s.response {
			sb.WriteString(l + "\n")
		}
	}
	return sb.String()
}

func runGoldenFile(t *testing.T, file string, fx map[string]*fixture) {
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	preamble, steps, err := parseGolden(string(raw))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	s := startServer(t)
	n := newNormalizer(t, s, fx)
	for _, st := range steps {
		where := fmt.Sprintf("%s:%d (%s)", file, st.line, st.title)
		if st.isSeed() {
			n.seed(where, st.request)
			continue
		}
		req, err := n.buildRequest(st.request)
		if err != nil {
			t.Errorf("%s: %v (step skipped)", where, err)
			continue
		}
		resp := s.do(req.method, req.path, req.headers, req.body)
		got, problems := n.render(req, resp)
		for _, p := range problems {
			t.Errorf("%s: %s", where, p)
		}
		if *update {
			st.response = strings.Split(got, "\n")
			continue
		}
		want := canonicalExpected(st.response)
		if got != want {
			t.Errorf("%s: %s %s: answer differs from the golden file (-want +got):\n%s", where, req.method, req.path, diff.Diff("want", []byte(want+"\n"), "got", []byte(got+"\n")))
		}
	}
	if *update {
		if err := os.WriteFile(file, []byte(formatGolden(preamble, steps)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// canonicalExpected re-prints the expected part the way render prints an
// answer, so that the golden files may be indented freely.
func canonicalExpected(lines []string) string {
	var head []string
	i := 0
	for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
		head = append(head, strings.TrimSpace(lines[i]))
	}
	body := strings.TrimSpace(strings.Join(lines[i:], "\n"))
	out := strings.Join(head, "\n")
	if body != "" {
		if v, err := parseOrdered([]byte(body)); err == nil {
			body = printOrdered(v)
		}
		out += "\n\n" + body
	}
	return out
}

type goldenRequest struct {
	method  string
	path    string
	headers map[string]string
	body    []byte
}

// normalizer turns answers into golden text and placeholders back into
// values. One per golden file.
type normalizer struct {
	t     *testing.T
	s     *testServer
	fx    map[string]*fixture
	ph    map[string]string // value → "<kindN>"
	rev   map[string]string // "kindN" → value
	count map[string]int
	sent  strings.Builder // every request sent so far, expanded
	// registrationEtags is set while rendering an answer about
	// registration records, whose etags have their own shape.
	registrationEtags bool
	fixed             [][2]string // value → placeholder for substrings, longest first
}

func newNormalizer(t *testing.T, s *testServer, fx map[string]*fixture) *normalizer {
	n := &normalizer{t: t, s: s, fx: fx, ph: map[string]string{}, rev: map[string]string{}, count: map[string]int{}}
	_, port, _ := strings.Cut(s.Host, ":")
	n.fixed = append(n.fixed, [2]string{s.Host, "<host>"}, [2]string{"127.0.0.1:" + port, "<host>"}, [2]string{s.IDScope, "<idscope>"})
	return n
}

var (
	placeholderRE = regexp.MustCompile(`^([a-z-]+)([0-9]+)$`)
	templateRE    = regexp.MustCompile(`\{\{(.*?)\}\}`)
	uuidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	dpsTimeRE     = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$`)
	codeRE        = regexp.MustCompile(`^[0-9A-F]{32}$`)
	idScopeRE     = regexp.MustCompile(`^0ne[0-9A-F]{8}$`)
)

// arg resolves a template argument: a placeholder name gives its value,
// anything else is taken literally.
func (n *normalizer) arg(a string) string {
	if v, ok := n.rev[a]; ok {
		return v
	}
	return a
}

// jsonEscape returns s escaped for use inside a JSON string literal.
func jsonEscape(s string) string {
	q := jsonString(s)
	return q[1 : len(q)-1]
}

// expand replaces {{...}} in a request line, header or body:
//
//	{{etag1}}            the value behind a placeholder of an earlier answer
//	{{json etag1}}       the same as a JSON string literal (quotes included)
//	{{unquote etag1}}    the same without surrounding double quotes
//	{{pem NAME}}         a fixture certificate as PEM, escaped for a JSON string
//	{{b64der NAME}}      ... as base64 DER
//	{{b64pem NAME}}      ... as base64 of the PEM text
//	{{keypem NAME}}      a fixture's private key as PEM, escaped for a JSON string
//	{{sha1 NAME}}        a fixture certificate's SHA-1 thumbprint (sha256 too)
//	{{proof NAME CN}}    a verification certificate with subject CN (a
//	                     placeholder such as code1, or a literal) signed by
//	                     fixture NAME's key, as PEM escaped for a JSON string
//	{{sas POLICY}}       a valid SAS token of a policy
//	{{repeat S N}}       S repeated N times
//	{{host}}             the server's host:port
//	{{idscope}}          the server's ID scope
func (n *normalizer) expand(s string) (string, error) {
	var firstErr error
	out := templateRE.ReplaceAllStringFunc(s, func(m string) string {
		f := strings.Fields(templateRE.FindStringSubmatch(m)[1])
		v, err := n.call(f)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", m, err)
		}
		return v
	})
	return out, firstErr
}

func (n *normalizer) call(f []string) (string, error) {
	if len(f) == 0 {
		return "", fmt.Errorf("empty template")
	}
	need := func(k int) error {
		if len(f) != k+1 {
			return fmt.Errorf("%s takes %d arguments", f[0], k)
		}
		return nil
	}
	fixture := func(name string) (*fixture, error) {
		x, ok := n.fx[name]
		if !ok {
			return nil, fmt.Errorf("no certificate fixture %q", name)
		}
		return x, nil
	}
	switch f[0] {
	case "json":
		if err := need(1); err != nil {
			return "", err
		}
		return jsonString(n.arg(f[1])), nil
	case "unquote":
		if err := need(1); err != nil {
			return "", err
		}
		return strings.Trim(n.arg(f[1]), `"`), nil
	case "sha1", "sha256":
		if err := need(1); err != nil {
			return "", err
		}
		x, err := fixture(f[1])
		if err != nil {
			return "", err
		}
		if f[0] == "sha1" {
			return pki.SHA1Thumbprint(x.Cert), nil
		}
		return pki.SHA256Thumbprint(x.Cert), nil
	case "pem", "b64der", "b64pem", "keypem":
		if err := need(1); err != nil {
			return "", err
		}
		x, err := fixture(f[1])
		if err != nil {
			return "", err
		}
		switch f[0] {
		case "pem":
			return jsonEscape(x.PEM()), nil
		case "b64der":
			return x.B64DER(), nil
		case "b64pem":
			return x.B64PEM(), nil
		}
		return jsonEscape(x.KeyPEM(n.t)), nil
	case "proof":
		if err := need(2); err != nil {
			return "", err
		}
		x, err := fixture(f[1])
		if err != nil {
			return "", err
		}
		c, err := pki.NewVerificationCert(n.arg(f[2]), x.Cert, x.Key)
		if err != nil {
			return "", err
		}
		return jsonEscape(string(pki.EncodePEM(c))), nil
	case "sas":
		if err := need(1); err != nil {
			return "", err
		}
		return n.s.token(f[1]), nil
	case "repeat":
		if err := need(2); err != nil {
			return "", err
		}
		k, err := strconv.Atoi(f[2])
		if err != nil {
			return "", err
		}
		return strings.Repeat(f[1], k), nil
	case "host":
		return n.s.Host, nil
	case "idscope":
		return n.s.IDScope, nil
	}
	if len(f) == 1 && placeholderRE.MatchString(f[0]) {
		if v, ok := n.rev[f[0]]; ok {
			return v, nil
		}
		return "", fmt.Errorf("no earlier answer had <%s>", f[0])
	}
	return "", fmt.Errorf("unknown template function %q", f[0])
}

// buildRequest reads the request part of a step.
func (n *normalizer) buildRequest(lines []string) (*goldenRequest, error) {
	i := 0
	for i < len(lines) && (strings.TrimSpace(lines[i]) == "" || strings.HasPrefix(lines[i], "#")) {
		i++
	}
	if i == len(lines) {
		return nil, fmt.Errorf("no request line")
	}
	rl, err := n.expand(lines[i])
	if err != nil {
		return nil, err
	}
	method, path, ok := strings.Cut(strings.TrimSpace(rl), " ")
	if !ok {
		return nil, fmt.Errorf("request line %q is not METHOD PATH", rl)
	}
	req := &goldenRequest{method: method, path: path, headers: map[string]string{}}
	for i++; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
		k, v, ok := strings.Cut(lines[i], ":")
		if !ok {
			return nil, fmt.Errorf("header line %q has no ':'", lines[i])
		}
		v, err := n.expand(strings.TrimSpace(v))
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(k, "Authorization") && v == "none" {
			v = ""
		}
		req.headers[strings.TrimSpace(k)] = v
	}
	body := strings.TrimSpace(strings.Join(lines[min(i, len(lines)):], "\n"))
	if body != "" {
		b, err := n.expand(body)
		if err != nil {
			return nil, err
		}
		req.body = []byte(b)
	}
	n.sent.WriteString(rl + "\n")
	for _, v := range req.headers {
		n.sent.WriteString(v + "\n")
	}
	n.sent.Write(req.body)
	return req, nil
}

// seed writes a registration record into the store.
func (n *normalizer) seed(where string, lines []string) {
	req, err := n.buildRequest(lines)
	if err != nil {
		n.t.Fatalf("%s: %v", where, err)
	}
	if req.path != "registration" {
		n.t.Fatalf("%s: SEED knows only 'registration'", where)
	}
	var res dps.DeviceRegistrationResult
	if err := json.Unmarshal(req.body, &res); err != nil {
		n.t.Fatalf("%s: %v", where, err)
	}
	r := &store.Registration{Result: &res, EnrollmentGroupID: req.headers["Group"]}
	if _, err := n.s.Store.SaveRegistration(context.Background(), r, req.headers["If-Match"], nil); err != nil {
		n.t.Fatalf("%s: SaveRegistration: %v", where, err)
	}
}

// assign returns the placeholder of a dynamic value, making a new one of
// kind for a value not seen before.
func (n *normalizer) assign(kind, v string) string {
	if p, ok := n.ph[v]; ok {
		return p
	}
	n.count[kind]++
	name := fmt.Sprintf("%s%d", kind, n.count[kind])
	n.ph[v] = "<" + name + ">"
	n.rev[name] = v
	return n.ph[v]
}

// render normalizes an answer into golden text and checks the rules every
// answer must follow, whatever the golden file says.
func (n *normalizer) render(req *goldenRequest, resp *response) (string, []string) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	reqID := resp.Header.Get("x-ms-request-id")
	if !uuidRE.MatchString(reqID) {
		bad("x-ms-request-id %q is not a UUID", reqID)
	}
	if len(resp.Body) > 0 && resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
		bad("Content-Type is %q, want application/json; charset=utf-8 (the Node SDKs parse only JSON content types)", resp.Header.Get("Content-Type"))
	}

	var sb strings.Builder
	sb.WriteString(strconv.Itoa(resp.Status))
	for _, h := range goldenHeaders {
		vs := resp.Header.Values(h)
		for _, v := range vs {
			if strings.EqualFold(h, "x-ms-continuation") {
				if v == "" {
					bad("x-ms-continuation is present but empty: C# keeps paging while the header exists")
				}
				v = n.assign("continuation", v)
			}
			sb.WriteString("\n" + h + ": " + n.replaceKnown(v))
		}
	}
	if len(resp.Body) == 0 {
		return sb.String(), problems
	}
	tree, err := parseOrdered(resp.Body)
	if err != nil {
		bad("the body is not JSON: %v", err)
		sb.WriteString("\n\n" + string(resp.Body))
		return sb.String(), problems
	}

	isRead := req.method == http.MethodGet || strings.HasSuffix(strings.ToLower(strings.SplitN(req.path, "?", 2)[0]), "/query")
	isEnrollmentPath := func() bool {
		p := strings.ToLower(req.path)
		return strings.HasPrefix(p, "/enrollments") || strings.HasPrefix(p, "/enrollmentgroups")
	}()
	if resp.Status >= 400 {
		n.checkError(tree, resp, bad)
	}
	if resp.Status == http.StatusOK && (req.method == http.MethodPut || strings.Contains(strings.ToLower(req.path), "/verif") || strings.Contains(strings.ToLower(req.path), "generateverificationcode")) {
		if obj, ok := tree.(object); ok {
			if e, ok := obj.get("etag"); ok {
				if _, seen := n.ph[fmt.Sprint(e)]; seen {
					bad("the write answered etag %v, which an earlier answer already had: every write must change the etag", e)
				}
			} else if p := strings.ToLower(req.path); !strings.HasPrefix(p, "/settings") && !strings.HasPrefix(p, "/policies") {
				// Policies are checked by TestPolicyEtag.
				bad("the answer to a write has no etag")
			}
		}
	}
	if isRead && isEnrollmentPath && resp.Status == http.StatusOK {
		checkNoSecrets(tree, nil, bad)
	}
	n.registrationEtags = strings.HasPrefix(strings.ToLower(req.path), "/registrations")
	tree = n.walk(tree, nil, bad)
	sb.WriteString("\n\n" + printOrdered(tree))
	return sb.String(), problems
}

func (n *normalizer) checkError(tree any, resp *response, bad func(string, ...any)) {
	obj, ok := tree.(object)
	if !ok {
		bad("the error body is not a JSON object")
		return
	}
	code, _ := obj.get("errorCode")
	num, ok := code.(json.Number)
	c, err := num.Int64()
	if !ok || err != nil {
		bad("errorCode %v is not an integer", code)
	} else if int(c/1000) != resp.Status {
		bad("errorCode %d does not start with the HTTP status %d", c, resp.Status)
	} else if h := resp.Header.Get("x-ms-error-code"); h != strconv.FormatInt(c, 10) {
		bad("x-ms-error-code %q differs from errorCode %d", h, c)
	}
	if id, _ := obj.get("trackingId"); id != resp.Header.Get("x-ms-request-id") {
		bad("trackingId %v differs from x-ms-request-id %q: the log line cannot be found", id, resp.Header.Get("x-ms-request-id"))
	}
	if m, _ := obj.get("message"); m == nil || m == "" {
		bad("the error has no message")
	}
	if ts, _ := obj.get("timestampUtc"); ts == nil {
		bad("the error has no timestampUtc")
	}
}

// checkNoSecrets fails on symmetric keys and certificate texts in a read:
// GET and query return neither, only the write answer and
// attestationmechanism return keys.
func checkNoSecrets(v any, path []string, bad func(string, ...any)) {
	switch t := v.(type) {
	case object:
		for _, m := range t {
			p := append(slices.Clone(path), m.Key)
			if (m.Key == "primaryKey" || m.Key == "secondaryKey") && slices.Contains(path, "symmetricKey") {
				bad("a read returned %s", strings.Join(p, "."))
			}
			if m.Key == "certificate" && slices.Contains(path, "x509") {
				bad("a read returned %s (only its info belongs in a read)", strings.Join(p, "."))
			}
			checkNoSecrets(m.Value, p, bad)
		}
	case []any:
		for _, e := range t {
			checkNoSecrets(e, path, bad)
		}
	}
}

// walk normalizes the dynamic values of a JSON tree and checks their shape.
func (n *normalizer) walk(v any, path []string, bad func(string, ...any)) any {
	switch t := v.(type) {
	case object:
		out := make(object, len(t))
		for i, m := range t {
			out[i] = member{m.Key, n.walk(m.Value, append(slices.Clone(path), m.Key), bad)}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = n.walk(e, path, bad)
		}
		return out
	case string:
		return n.normString(path, t, bad)
	}
	return v
}

func (n *normalizer) normString(path []string, s string, bad func(string, ...any)) string {
	key := ""
	if len(path) > 0 {
		key = path[len(path)-1]
	}
	where := strings.Join(path, ".")
	if strings.HasSuffix(key, "Utc") && !dpsTimeRE.MatchString(s) {
		bad("%s %q is not a DPS time (7 fractional digits and Z)", where, s)
	}
	switch key {
	case "etag":
		if s == "" {
			bad("%s is empty", where)
		}
		if n.registrationEtags {
			// Azure's registration etags are base64 of a quoted etag.
			if b, err := base64.StdEncoding.DecodeString(s); err != nil || len(b) < 3 || b[0] != '"' || b[len(b)-1] != '"' {
				bad("registration %s %q is not base64 of a quoted etag", where, s)
			}
		} else if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
			bad("%s %q is not a quoted etag", where, s)
		}
		return n.assign("etag", s)
	case "trackingId":
		if !uuidRE.MatchString(s) {
			bad("%s %q is not a UUID", where, s)
		}
		return "<tracking-id>"
	case "createdDateTimeUtc", "lastUpdatedDateTimeUtc":
		return n.assign("time", s)
	case "timestampUtc":
		if ts, err := time.Parse(time.RFC3339Nano, s); err != nil || time.Since(ts).Abs() > time.Minute {
			bad("%s %q is not the current time", where, s)
		}
		return "<now>"
	case "verificationCode":
		if !codeRE.MatchString(s) {
			bad("%s %q is not 32 upper-case hex digits", where, s)
		}
		return n.assign("code", s)
	case "idScope":
		if !idScopeRE.MatchString(s) {
			bad("%s %q is not shaped like an ID scope (0ne + 8 hex digits)", where, s)
		}
	case "created", "updated":
		if slices.Contains(path, "properties") {
			if _, err := http.ParseTime(s); err != nil || !strings.HasSuffix(s, " GMT") {
				bad("%s %q is not an RFC 1123 date", where, s)
			}
			return "<date>"
		}
	case "primaryKey", "secondaryKey":
		if p, ok := n.ph[s]; ok {
			return p
		}
		if strings.Contains(n.sent.String(), s) {
			return s // the client chose it
		}
		b, err := base64.StdEncoding.DecodeString(s)
		switch {
		case err != nil:
			bad("%s %q is not base64", where, s)
		case slices.Contains(path, "symmetricKey") && len(b) != dps.GeneratedKeyBytes:
			bad("generated %s is %d bytes, want %d", where, len(b), dps.GeneratedKeyBytes)
		case len(b) < 16 || len(b) > 64:
			bad("generated %s is %d bytes, want 16 to 64", where, len(b))
		}
		return n.assign("key", s)
	}
	return n.replaceKnown(s)
}

// replaceKnown replaces fixture certificates and thumbprints, the host, the
// ID scope and values already given a placeholder.
func (n *normalizer) replaceKnown(s string) string {
	for name, f := range n.fx {
		switch s {
		case f.PEM():
			return "<pem " + name + ">"
		case pki.SHA1Thumbprint(f.Cert):
			return "<sha1 " + name + ">"
		case pki.SHA256Thumbprint(f.Cert):
			return "<sha256 " + name + ">"
		}
	}
	if p, ok := n.ph[s]; ok {
		return p
	}
	repl := slices.Clone(n.fixed)
	for v, p := range n.ph {
		if len(v) >= 8 {
			repl = append(repl, [2]string{v, p})
		}
	}
	sort.Slice(repl, func(i, j int) bool { return len(repl[i][0]) > len(repl[j][0]) })
	for _, r := range repl {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}
