package serviceapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// authorize checks the request's SAS token against the named policy and that
// the policy grants right (why, if not empty, says why the route needs it).
// Every failure says precisely what is wrong; the token itself is never
// logged.
func (a *API) authorize(r *http.Request, right, why string) error {
	p, err := a.Authenticate(r)
	if err != nil {
		return err
	}
	for _, g := range p.Rights {
		if strings.EqualFold(g, right) {
			return nil
		}
	}
	if why != "" {
		why = "; " + why
	}
	return dpserr.Unauthorized("shared access policy %q does not grant %s (it grants %s)%s", p.Name, right, strings.Join(p.Rights, ", "), why)
}

// Authenticate checks the request's SAS token against the policy it names
// and returns the policy, whatever its rights: every operation authorizes
// with it, and the console signs in with it.
func (a *API) Authenticate(r *http.Request) (*store.Policy, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, dpserr.Unauthorized("the request has no Authorization header; the service API needs 'SharedAccessSignature sr=...&sig=...&se=...&skn=POLICY' signed with a shared access policy key")
	}
	tok, err := sas.Parse(h)
	if err != nil {
		return nil, dpserr.Unauthorized("malformed SAS token: %v", err)
	}
	if tok.KeyName == "" {
		return nil, dpserr.Unauthorized("the SAS token has no skn; the service API needs the name of the shared access policy that signed it")
	}
	if err := tok.CheckExpiry(a.now(), a.MaxSASLifetime); err != nil {
		return nil, dpserr.Unauthorized("%v", err)
	}
	ours := a.OwnHost
	if ours == nil {
		ours = func(string) bool { return false }
	}
	if err := tok.CheckService(ours, r.URL.Path); err != nil {
		return nil, dpserr.Unauthorized("%v", err)
	}
	p, err := a.Store.Policy(r.Context(), tok.KeyName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, dpserr.Unauthorized("the SAS token names shared access policy %q, which does not exist", dps.Truncate(tok.KeyName))
	}
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	if !verifyPolicy(tok, p) {
		return nil, dpserr.Unauthorized("the SAS token signature does not match a key of shared access policy %q", p.Name)
	}
	return p, nil
}

func verifyPolicy(tok *sas.Token, p *store.Policy) bool {
	for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
		if k == "" {
			continue
		}
		key, err := sas.DecodeKey(k)
		if err == nil && tok.Verify(key) {
			return true
		}
	}
	return false
}
