package provisioning

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// Journal receives the pipeline's refusals (internal/journal keeps them).
// Record must not block.
type Journal interface {
	Record(*store.Refusal)
}

// The operations of journal entries.
const (
	OpRegister = "register"
	OpPoll     = "poll"
	OpLookup   = "lookup"
)

// Refused records a refusal of a device request in the journal and returns
// err. The pipeline calls it for its own refusals; a transport calls it for
// the refusals it makes before the pipeline can (a body that does not
// parse). Server failures (5xx) are not refusals and are not recorded; the
// log has them.
func (p *Pipeline) Refused(req *Request, op string, err error) error {
	e := dpserr.As(err)
	if p.Journal != nil && e.Status < 500 {
		p.record(req, op, e.Status, e.Code, e.Error())
	}
	return err
}

// journal records a refusal the deferred call of a pipeline operation sees
// in *err.
func (p *Pipeline) journal(req *Request, op string, err *error) {
	if *err != nil {
		p.Refused(req, op, *err)
	}
}

func (p *Pipeline) record(req *Request, op string, status, code int, reason string) {
	if p.Journal == nil {
		return
	}
	p.Journal.Record(&store.Refusal{
		Time:           p.now(),
		Transport:      req.Transport,
		Operation:      op,
		RegistrationID: clip(req.RegistrationID, 256),
		Credential:     Summarize(req.Credentials, req.Body),
		Status:         status,
		ErrorCode:      code,
		Reason:         reason,
		TrackingID:     req.TrackingID,
		Peer:           req.Peer,
	})
}

// Summarize describes what a device presented, for the journal: the
// certificates' subjects, issuers and thumbprints, the SAS token's key
// name, resource and expiry. It never includes a key, a token's signature
// or anything it cannot parse.
func Summarize(c attest.Credentials, body *dps.DeviceRegistration) string {
	var parts []string
	if len(c.Certificates) > 0 {
		parts = append(parts, chainSummary(c.Certificates))
	}
	if c.SAS != "" {
		parts = append(parts, sasSummary(c.SAS))
	}
	if body != nil && body.TPM != nil {
		parts = append(parts, "a TPM endorsement key in the body")
	}
	if len(parts) == 0 {
		return "no credentials"
	}
	return strings.Join(parts, "; ")
}

// maxSummaryCerts bounds the certificates a summary describes; a device
// may present more than dpsd accepts.
const maxSummaryCerts = 12

func chainSummary(certs []*x509.Certificate) string {
	var b strings.Builder
	b.WriteString("X.509 certificate")
	if len(certs) > 1 {
		fmt.Fprintf(&b, " chain of %d", len(certs))
	}
	b.WriteString(": ")
	for i, c := range certs {
		if i == maxSummaryCerts {
			fmt.Fprintf(&b, " <- (%d more)", len(certs)-i)
			break
		}
		if i > 0 {
			b.WriteString(" <- ")
		}
		in := pki.Info(c)
		fmt.Fprintf(&b, "[%s, issued by %s, SHA-256 %s, SHA-1 %s]", clip(in.SubjectName, 200), clip(in.IssuerName, 200), in.SHA256Thumbprint, in.SHA1Thumbprint)
	}
	return b.String()
}

// sasSummary reads sr, skn and se from a token, whatever else is wrong with
// it, and never its signature.
func sasSummary(tok string) string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(tok), sas.Prefix)
	if !ok {
		return fmt.Sprintf("an Authorization value that is not a SAS token (%d bytes, not shown)", len(tok))
	}
	var skn, sr, se string
	for _, field := range strings.Split(rest, "&") {
		k, v, _ := strings.Cut(field, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "skn":
			skn = unescape(v)
		case "sr":
			sr = unescape(v)
		case "se":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n < 1<<40 {
				se = time.Unix(n, 0).UTC().Format(time.RFC3339)
			} else {
				se = strconv.Quote(clip(v, 40))
			}
		}
	}
	s := "SAS token"
	if skn != "" {
		s += " for skn=" + clip(skn, 100)
	} else {
		s += " without skn"
	}
	if sr != "" {
		s += ", sr=" + clip(sr, 300)
	}
	if se != "" {
		s += ", expiring " + se
	}
	return s
}

func unescape(v string) string {
	if u, err := url.QueryUnescape(v); err == nil {
		return u
	}
	return v
}

// clip makes s printable and at most n runes long.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
