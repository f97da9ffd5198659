// Package serviceapi serves the DPS service (management) API: enrollments,
// enrollment groups and registration states in Azure's data-plane shapes, and
// the parts of the management plane Azure keeps in Resource Manager — CA
// certificates, linked hubs, access policies, settings — in ARM's shapes.
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
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/store"
)

// API serves the service API.
type API struct {
	Store store.Store
	Log   *slog.Logger
	Now   func() time.Time
	// Endpoints reports the advertised endpoints for GET /settings.
	Endpoints func() (device, service string)
}

// Segments are the first path segments the service API owns; every other
// path belongs to the device API ({idScope}/registrations/...).
var Segments = []string{"enrollments", "enrollmentgroups", "registrations", "certificates", "linkedhubs", "policies", "settings"}

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
			httpx.WriteError(w, r, a.Log, dpserr.New(http.StatusMethodNotAllowed, dpserr.CodeMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
		httpx.WriteError(w, r, a.Log, dpserr.NotFound(dpserr.CodeNotFound, "no service API operation at %s %s", r.Method, r.URL.Path))
		return
	}
	httpx.SetRoute(r, rt.name)
	if err := a.authorize(r, rt.right); err != nil {
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
	for _, e := range a.routes() {
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

func (a *API) routes() []routeEntry {
	r := func(method, pattern, name, right string, h func(http.ResponseWriter, *http.Request, []string) error) routeEntry {
		return routeEntry{strings.Split(pattern, "/"), method, route{name, right, h}}
	}
	const (
		get, put, post, del, patch = http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch
		eRead, eWrite              = dps.RightEnrollmentRead, dps.RightEnrollmentWrite
		rRead, rWrite              = dps.RightRegistrationStatusRead, dps.RightRegistrationStatusWrite
		cfg                        = dps.RightServiceConfig
	)
	// Order matters where a literal and a parameter overlap: .../query before .../*.
	return []routeEntry{
		r(post, "enrollments", "enrollments.bulk", eWrite, a.bulkEnrollments),
		r(post, "enrollments/query", "enrollments.query", eRead, a.queryEnrollments),
		r(get, "enrollments/*", "enrollments.get", eRead, a.getEnrollment),
		r(put, "enrollments/*", "enrollments.put", eWrite, a.putEnrollment),
		r(del, "enrollments/*", "enrollments.delete", eWrite, a.deleteEnrollment),
		r(post, "enrollments/*/attestationmechanism", "enrollments.attestation", eRead, a.enrollmentAttestation),

		r(post, "enrollmentgroups", "groups.bulk", eWrite, a.bulkGroups),
		r(post, "enrollmentgroups/query", "groups.query", eRead, a.queryGroups),
		r(get, "enrollmentgroups/*", "groups.get", eRead, a.getGroup),
		r(put, "enrollmentgroups/*", "groups.put", eWrite, a.putGroup),
		r(del, "enrollmentgroups/*", "groups.delete", eWrite, a.deleteGroup),
		r(post, "enrollmentgroups/*/attestationmechanism", "groups.attestation", eRead, a.groupAttestation),

		r(get, "registrations/*", "registrations.get", rRead, a.getRegistration),
		r(del, "registrations/*", "registrations.delete", rWrite, a.deleteRegistration),
		r(post, "registrations/*/query", "registrations.query", rRead, a.queryRegistrations),

		r(get, "certificates", "certificates.list", cfg, a.listCertificates),
		r(get, "certificates/*", "certificates.get", cfg, a.getCertificate),
		r(put, "certificates/*", "certificates.put", cfg, a.putCertificate),
		r(del, "certificates/*", "certificates.delete", cfg, a.deleteCertificate),
		r(post, "certificates/*/generateverificationcode", "certificates.code", cfg, a.generateVerificationCode),
		r(post, "certificates/*/verify", "certificates.verify", cfg, a.verifyCertificate),

		r(get, "linkedhubs", "linkedhubs.list", cfg, a.listLinkedHubs),
		r(get, "linkedhubs/*", "linkedhubs.get", cfg, a.getLinkedHub),
		r(put, "linkedhubs/*", "linkedhubs.put", cfg, a.putLinkedHub),
		r(del, "linkedhubs/*", "linkedhubs.delete", cfg, a.deleteLinkedHub),

		r(get, "policies", "policies.list", cfg, a.listPolicies),
		r(get, "policies/*", "policies.get", cfg, a.getPolicy),
		r(put, "policies/*", "policies.put", cfg, a.putPolicy),
		r(del, "policies/*", "policies.delete", cfg, a.deletePolicy),

		r(get, "settings", "settings.get", cfg, a.getSettings),
		r(put, "settings", "settings.put", cfg, a.putSettings),
		r(patch, "settings", "settings.put", cfg, a.putSettings),
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
