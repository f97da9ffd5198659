package serviceapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/store"
)

// The fault injection rules of the instance (internal/limits), a dpsd
// extension behind ServiceConfig: GET shows them, and the rules this node
// was started with (--fault, read-only); PUT replaces them; DELETE removes
// them. They are stored, so every node applies them within seconds.

var faultRules = dpserr.Resource{Noun: "fault rules", NotFound: dpserr.CodeNotFound,
	Stale: "the If-Match etag does not match the %s (they were changed); read them again and retry"}

// FaultsView is the answer of /faults.
type FaultsView struct {
	Rules      []limits.Rule `json:"rules"`
	StartRules []limits.Rule `json:"startRules"`
	Etag       string        `json:"etag,omitempty"`
}

func (a *API) faultsView(ctx context.Context) (*FaultsView, error) {
	v := &FaultsView{Rules: []limits.Rule{}, StartRules: a.Faults.StartRules()}
	s, err := a.Store.RuntimeSetting(ctx, limits.SettingName)
	if errors.Is(err, store.ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	rs, err := limits.DecodeRuleSet([]byte(s.Doc))
	if err != nil {
		return nil, dpserr.Internal(err)
	}
	v.Rules, v.Etag = rs.Rules, s.Etag
	return v, nil
}

func (a *API) getFaults(w http.ResponseWriter, r *http.Request, _ []string) error {
	v, err := a.faultsView(r.Context())
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, v)
	return nil
}

// putFaults replaces the rules; without If-Match unconditionally (there is
// one set of rules, always there to replace).
func (a *API) putFaults(w http.ResponseWriter, r *http.Request, _ []string) error {
	b, err := httpx.ReadBody(r)
	if err != nil {
		return err
	}
	if err := dps.CheckJSONText(b); err != nil {
		return dpserr.Malformed("the request body is not valid: %v", err)
	}
	rs, err := limits.DecodeRuleSet(b)
	if err != nil {
		return dpserr.BadRequest(`the fault rules are not valid: %v; send {"rules": [{"action": "503", "fraction": 0.2, "on": "register"}, ...]}`, err)
	}
	doc, err := json.Marshal(rs)
	if err != nil {
		return dpserr.Internal(err)
	}
	ifMatch := httpx.IfMatch(r)
	if ifMatch == "" {
		ifMatch = "*"
	}
	stored, err := a.Store.PutRuntimeSetting(r.Context(), &store.RuntimeSetting{Name: limits.SettingName, Doc: string(doc)}, ifMatch)
	if err != nil {
		return dpserr.FromStore(err, faultRules, "")
	}
	a.Faults.SetRuntime(rs.Rules, stored.Etag)
	return a.getFaults(w, r, nil)
}

func (a *API) deleteFaults(w http.ResponseWriter, r *http.Request, _ []string) error {
	err := a.Store.DeleteRuntimeSetting(r.Context(), limits.SettingName, httpx.IfMatch(r))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return dpserr.FromStore(err, faultRules, "")
	}
	a.Faults.SetRuntime(nil, "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}
