// Package serviceapi serves the DPS service (management) API: enrollments,
// enrollment groups and registration states in Azure's data-plane shapes, and
// the parts of the management plane Azure keeps in Resource Manager — CA
// certificates, linked hubs, access policies, settings — in ARM's shapes,
// and dpsd's certificate issuance: issuing CAs and the certificates they
// issued.
//
// Routes match case-insensitively and tolerate a trailing slash, because
// Azure's SDKs differ (/enrollmentGroups vs /enrollmentgroups, /enrollments/).
// Handlers are thin: they authorize, decode, call the enrollment rules and
// the store, and render.
package serviceapi

import (
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/limits"
	"github.com/dpsd/dpsd/internal/store"
)

// Config is what the service API serves from.
type Config struct {
	Store store.Store
	Log   *slog.Logger
	Now   func() time.Time // nil: time.Now
	// Endpoints reports the advertised endpoints for GET /settings.
	Endpoints func() (device, service string)
	// OwnHost reports whether a host name (lower case, without port) is
	// one of this instance's; a service token must name one. Nil refuses
	// every token.
	OwnHost func(host string) bool
	// MaxSASLifetime, when positive, refuses a service SAS token that stays
	// valid longer than this from now.
	MaxSASLifetime time.Duration
	// ProtectEnrollmentKeys makes the attestation mechanism of enrollments
	// and groups, which holds their symmetric keys, readable only with
	// EnrollmentWrite. Azure lets EnrollmentRead read it, and a group's key
	// derives every device key of the group.
	ProtectEnrollmentKeys bool
	// Faults are the instance's fault injection rules (/faults).
	Faults *limits.Faults
	// CRLBaseURL is the public URL of the service listener, when
	// configured: the issuing CAs' CRL URLs start with it.
	CRLBaseURL string
}

// API serves the service API. Make one with New.
type API struct {
	Config
	routes []routeEntry
}

// New returns the service API over c.Store, its routes ready.
func New(c Config) *API {
	a := &API{Config: c}
	a.routes = a.routeTable(newIndividuals(c.Store), newGroups(c.Store))
	if c.ProtectEnrollmentKeys {
		for i, e := range a.routes {
			if strings.HasSuffix(e.rt.name, ".attestation") {
				a.routes[i].rt.right = eWrite
				a.routes[i].rt.why = "with --protect-enrollment-keys, reading an attestation mechanism (it holds the symmetric keys) needs EnrollmentWrite"
			}
		}
	}
	return a
}

// Segments are the first path segments the service API owns; every other
// path belongs to the device API ({idScope}/registrations/...).
var Segments = []string{"enrollments", "enrollmentgroups", "registrations", "certificates", "linkedhubs", "policies", "settings", "refusals", "faults",
	"issuingcas", "issuedcertificates"}

// Owns reports whether the service API serves a path with this first segment.
func Owns(first string) bool {
	for _, s := range Segments {
		if strings.EqualFold(first, s) {
			return true
		}
	}
	return false
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// route is one handler and the right it needs.
type route struct {
	name    string // for metrics and logs
	right   string
	why     string // why the route needs right, when that is not obvious
	handler func(w http.ResponseWriter, r *http.Request, p []string) error
}

// ServeHTTP dispatches on method and the lower-cased fixed segments. Path
// parameters (IDs) keep their case and are unescaped individually.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs, err := splitPath(r.URL.EscapedPath())
	if err != nil {
		httpx.WriteError(w, r, a.Log, dpserr.BadRequest("%v", err))
		return
	}
	rt, params, allowed := a.match(r.Method, segs)
	if rt == nil {
		if allowed {
			httpx.WriteError(w, r, a.Log, dpserr.New(http.StatusMethodNotAllowed, dpserr.CodeMethodNotAllowed, "method %s is not allowed on %s", dps.Truncate(r.Method), dps.Truncate(r.URL.Path)))
			return
		}
		httpx.WriteError(w, r, a.Log, dpserr.NotFound(dpserr.CodeNotFound, "no service API operation at %s %s", dps.Truncate(r.Method), dps.Truncate(r.URL.Path)))
		return
	}
	httpx.SetRoute(r, rt.name)
	if err := a.authorize(r, rt.right, rt.why); err != nil {
		httpx.WriteError(w, r, a.Log, err)
		return
	}
	if err := rt.handler(w, r, params); err != nil {
		httpx.WriteError(w, r, a.Log, err)
	}
}

// match finds the route. allowed reports that the path exists under another
// method (405 rather than 404).
func (a *API) match(method string, segs []string) (rt *route, params []string, pathExists bool) {
	if len(segs) == 0 {
		return nil, nil, false
	}
	lower := make([]string, len(segs))
	for i, s := range segs {
		lower[i] = strings.ToLower(s)
	}
	m := method
	for _, e := range a.routes {
		if len(e.pattern) != len(segs) {
			continue
		}
		var ps []string
		ok := true
		for i, p := range e.pattern {
			if p == "*" {
				ps = append(ps, segs[i])
			} else if p != lower[i] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if e.method == m {
			r := e.rt
			return &r, ps, true
		}
		pathExists = true
	}
	return nil, nil, pathExists
}

type routeEntry struct {
	pattern []string
	method  string
	rt      route
}

func entry(method, pattern, name, right string, h handler) routeEntry {
	return routeEntry{strings.Split(pattern, "/"), method, route{name: name, right: right, handler: h}}
}

const (
	get, put, post, del, patch = http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch
	eRead, eWrite              = dps.RightEnrollmentRead, dps.RightEnrollmentWrite
	rRead, rWrite              = dps.RightRegistrationStatusRead, dps.RightRegistrationStatusWrite
	cfg                        = dps.RightServiceConfig
)

// routeTable lists every operation. Order matters where a literal and a
// parameter overlap: .../query before .../*.
func (a *API) routeTable(ind *individuals, grp *groups) []routeEntry {
	st := a.Store
	return slices.Concat(ind.routes("enrollments", "enrollments"), grp.routes("enrollmentgroups", "groups"), []routeEntry{
		entry(get, "registrations/*", "registrations.get", rRead, getOne(registrationRecords, st.Registration, registrationState)),
		entry(del, "registrations/*", "registrations.delete", rWrite, deleteOne(registrationRecords, st.DeleteRegistration)),
		entry(post, "registrations/*/query", "registrations.query", rRead, a.queryRegistrations),

		entry(get, "refusals", "refusals.list", eRead, a.listRefusals),

		entry(get, "certificates", "certificates.list", cfg, listAll(st.CACertificates, certificateView)),
		entry(get, "certificates/*", "certificates.get", cfg, getOne(caCertificates, st.CACertificate, certificateView)),
		entry(put, "certificates/*", "certificates.put", cfg, a.putCertificate),
		entry(del, "certificates/*", "certificates.delete", cfg, deleteOne(caCertificates, st.DeleteCACertificate)),
		entry(post, "certificates/*/generateverificationcode", "certificates.code", cfg, a.generateVerificationCode),
		entry(post, "certificates/*/verify", "certificates.verify", cfg, a.verifyCertificate),

		entry(get, "linkedhubs", "linkedhubs.list", cfg, listAll(st.LinkedHubs, LinkedHubView)),
		entry(get, "linkedhubs/*", "linkedhubs.get", cfg, getOne(linkedHubs, st.LinkedHub, LinkedHubView)),
		entry(put, "linkedhubs/*", "linkedhubs.put", cfg, a.putLinkedHub),
		entry(del, "linkedhubs/*", "linkedhubs.delete", cfg, deleteOne(linkedHubs, st.DeleteLinkedHub)),

		entry(get, "policies", "policies.list", cfg, listAll(st.Policies, PolicyView)),
		entry(get, "policies/*", "policies.get", cfg, getOne(policies, st.Policy, PolicyView)),
		entry(put, "policies/*", "policies.put", cfg, a.putPolicy),
		entry(del, "policies/*", "policies.delete", cfg, a.deletePolicy),

		entry(get, "issuingcas", "issuingcas.list", cfg, listAll(st.IssuingCAs, a.issuingCAView)),
		entry(get, "issuingcas/*", "issuingcas.get", cfg, getOne(issuance.IssuingCAs, st.IssuingCA, a.issuingCAView)),
		entry(put, "issuingcas/*", "issuingcas.put", cfg, a.putIssuingCA),
		entry(del, "issuingcas/*", "issuingcas.delete", cfg, deleteOne(issuance.IssuingCAs, st.DeleteIssuingCA)),

		entry(get, "issuedcertificates", "issued.list", rRead, a.listIssued),
		entry(post, "issuedcertificates/revoke", "issued.revoke", rWrite, a.revokeIssued),
		entry(get, "issuedcertificates/*", "issued.get", rRead, getOne(issuedCertificates, st.IssuedCertificate, issuedCertificateView)),

		entry(get, "settings", "settings.get", cfg, a.getSettings),
		entry(put, "settings", "settings.put", cfg, a.putSettings),
		entry(patch, "settings", "settings.put", cfg, a.putSettings),

		entry(get, "faults", "faults.get", cfg, a.getFaults),
		entry(put, "faults", "faults.put", cfg, a.putFaults),
		entry(del, "faults", "faults.delete", cfg, a.deleteFaults),
	})
}

// routes are the operations on one kind of enrollment at path; name
// prefixes the route names.
func (k *kind[T, P]) routes(path, name string) []routeEntry {
	return []routeEntry{
		entry(post, path, name+".bulk", eWrite, k.bulk),
		entry(post, path+"/query", name+".query", eRead, k.query),
		entry(get, path+"/*", name+".get", eRead, k.getRecord),
		entry(put, path+"/*", name+".put", eWrite, k.putRecord),
		entry(del, path+"/*", name+".delete", eWrite, deleteOne(k.res, k.del)),
		entry(post, path+"/*/attestationmechanism", name+".attestation", eRead, getOne(k.res, k.get, attestationOf)),
	}
}

// splitPath splits an escaped path into unescaped segments, dropping empty
// ones (a trailing slash, a doubled slash).
func splitPath(escaped string) ([]string, error) {
	var segs []string
	for _, s := range strings.Split(escaped, "/") {
		if s == "" {
			continue
		}
		u, err := url.PathUnescape(s)
		if err != nil {
			return nil, err
		}
		segs = append(segs, u)
	}
	return segs, nil
}
