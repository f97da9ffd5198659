package issuance

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/store"
)

// Revocation lists. Each issuing CA has one CRL (DER, signed by the CA) at
// CRLPath. It is made on request from the store, so every node of a cluster
// serves the same list. It is the list as of the start of the current hour,
// or of the last revocation when that is later; that instant, in Unix
// nanoseconds, is its CRL number (so the number grows whenever the content
// changes, on every node alike), and to the second its thisUpdate. It lists
// the revoked certificates that have not expired by then, and is valid for
// CRLValidity.
const (
	crlPeriod   = time.Hour
	CRLValidity = 24 * time.Hour
)

// Revocation reasons (RFC 5280 CRLReason) dpsd records. certificateHold is
// not one: a revocation is final.
var reasons = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"privilegeWithdrawn":   9,
}

// ReasonNames lists the revocation reasons, for help texts.
const ReasonNames = "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn"

// CanonicalReason reads a revocation reason, ignoring case; "" is
// unspecified, which is recorded as "".
func CanonicalReason(s string) (string, error) {
	for name := range reasons {
		if strings.EqualFold(s, name) {
			if name == "unspecified" {
				return "", nil
			}
			return name, nil
		}
	}
	if s == "" {
		return "", nil
	}
	return "", fmt.Errorf("revocation reason %q is not one of %s", s, ReasonNames)
}

// BuildCRL makes the CRL of ca listing revoked (its revoked certificates)
// at now, and returns it with the instant it stands for (its number).
func BuildCRL(ca *store.IssuingCA, revoked []*store.IssuedCertificate, now time.Time) ([]byte, time.Time, error) {
	a, err := load(ca, now)
	if err != nil {
		return nil, time.Time{}, err
	}
	asOf := crlAsOf(revoked, now)
	tmpl := &x509.RevocationList{
		Number: big.NewInt(asOf.UnixNano()),
		// CRL times have a resolution of one second.
		ThisUpdate: asOf.Truncate(time.Second),
		NextUpdate: asOf.Truncate(crlPeriod).Add(CRLValidity),
	}
	for _, c := range revoked {
		if !c.NotAfter.After(asOf) || !c.Revoked() || c.RevokedAt.After(asOf) {
			continue
		}
		serial, ok := new(big.Int).SetString(c.SerialNumber, 16)
		if !ok {
			return nil, time.Time{}, fmt.Errorf("issued certificate %q: the serial number is not hex", c.SerialNumber)
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: serial, RevocationTime: c.RevokedAt.UTC().Truncate(time.Second), ReasonCode: reasons[c.RevocationReason]})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, a.cert, a.key)
	if err != nil {
		return nil, time.Time{}, err
	}
	return der, asOf, nil
}

// crlAsOf is the instant a CRL made at now stands for: the start of the
// current period, or the last revocation when that is later (but never
// after now: a node whose clock runs behind another's does not date a CRL
// in its own future).
func crlAsOf(revoked []*store.IssuedCertificate, now time.Time) time.Time {
	asOf := now.UTC().Truncate(crlPeriod)
	for _, c := range revoked {
		if c.RevokedAt.After(asOf) {
			asOf = c.RevokedAt.UTC()
		}
	}
	if asOf.After(now) {
		asOf = now.UTC()
	}
	return asOf
}

// CRLs serves the revocation lists: GET CRLPath(name). They are public, as
// CRLs are: hubs and brokers fetch them without credentials.
type CRLs struct {
	Store store.Store
	Log   *slog.Logger
	Now   func() time.Time

	mu    sync.Mutex
	cache map[string]cachedCRL // by lower-cased CA name
}

// cachedCRL spares signing the same list again: a list is determined by the
// CA (its etag) and the instant it stands for.
type cachedCRL struct {
	etag string
	asOf time.Time
	der  []byte
}

// ServeHTTP answers GET /crl/{name}.crl with the CRL as DER
// (application/pkix-crl).
func (c *CRLs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := c.serve(w, r); err != nil {
		httpx.WriteError(w, r, c.Log, err)
	}
}

func (c *CRLs) serve(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return dpserr.New(http.StatusMethodNotAllowed, dpserr.CodeMethodNotAllowed, "method %s is not allowed on %s; CRLs are read with GET", dps.Truncate(r.Method), dps.Truncate(r.URL.Path))
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/crl/")
	name, err := url.PathUnescape(strings.TrimSuffix(rest, ".crl"))
	if !ok || !strings.HasSuffix(rest, ".crl") || err != nil || name == "" || strings.Contains(name, "/") {
		return dpserr.NotFound(dpserr.CodeNotFound, "no CRL at %s; an issuing CA's CRL is at /crl/{name}.crl", dps.Truncate(r.URL.Path))
	}
	der, err := c.CRL(r.Context(), name)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Content-Length", fmt.Sprint(len(der)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(der)
	}
	return nil
}

// CRL returns the current CRL of the issuing CA name.
func (c *CRLs) CRL(ctx context.Context, name string) ([]byte, error) {
	ca, err := c.Store.IssuingCA(ctx, name)
	if err != nil {
		return nil, dpserr.FromStore(err, IssuingCAs, name)
	}
	revoked, err := c.Store.RevokedCertificates(ctx, ca.Name)
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	asOf := crlAsOf(revoked, now)
	k := strings.ToLower(ca.Name)
	c.mu.Lock()
	hit, ok := c.cache[k]
	c.mu.Unlock()
	if ok && hit.etag == ca.Etag && hit.asOf.Equal(asOf) {
		return hit.der, nil
	}
	der, asOf, err := BuildCRL(ca, revoked, now)
	var unusable *UnusableError
	if errors.As(err, &unusable) {
		return nil, dpserr.NotFound(dpserr.CodeNotFound, "%v, so it publishes no CRL", err)
	}
	if err != nil {
		return nil, dpserr.Internal(err)
	}
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]cachedCRL{}
	}
	c.cache[k] = cachedCRL{etag: ca.Etag, asOf: asOf, der: der}
	c.mu.Unlock()
	return der, nil
}

// IssuingCAs words the store failures of issuing CAs.
var IssuingCAs = dpserr.Resource{Noun: "issuing CA", NotFound: dpserr.CodeIssuingCANotFound,
	Exists: "issuing CA %q already exists; to change its policy, send If-Match with its etag"}
