package storetest

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// kind describes one type of versioned record (enrollments, groups,
// policies, CA certificates, linked hubs, registrations), so that the rules
// every one of them follows are tested once.
type kind[T any] struct {
	make       func(id, content string) T // a valid record; content is a field the test reads back
	id         func(T) string
	content    func(T) string
	setContent func(T, string)
	etag       func(T) string
	created    func(T) time.Time
	updated    func(T) time.Time
	put        func(ctx context.Context, s store.Store, v T, ifMatch string) (T, error)
	get        func(ctx context.Context, s store.Store, id string) (T, error)
	del        func(ctx context.Context, s store.Store, id, ifMatch string) error
	// record wraps a value for Restore; setMeta sets what Restore keeps.
	record  func(T) store.Record
	setMeta func(v T, etag string, created, updated time.Time)
	// registrationEtag: the etag is base64 of a quoted value rather than a
	// quoted value.
	registrationEtag bool
}

func enrollmentKind() kind[*dps.IndividualEnrollment] {
	return kind[*dps.IndividualEnrollment]{
		make: func(id, c string) *dps.IndividualEnrollment {
			return &dps.IndividualEnrollment{RegistrationID: id, DeviceID: c, EnrollmentSettings: dps.EnrollmentSettings{Attestation: symmetricKey(1), ProvisioningStatus: dps.ProvisioningEnabled}}
		},
		id:         func(e *dps.IndividualEnrollment) string { return e.RegistrationID },
		content:    func(e *dps.IndividualEnrollment) string { return e.DeviceID },
		setContent: func(e *dps.IndividualEnrollment, c string) { e.DeviceID = c },
		etag:       func(e *dps.IndividualEnrollment) string { return e.Etag },
		created:    func(e *dps.IndividualEnrollment) time.Time { return tm(e.CreatedDateTimeUtc) },
		updated:    func(e *dps.IndividualEnrollment) time.Time { return tm(e.LastUpdatedDateTimeUtc) },
		put: func(ctx context.Context, s store.Store, e *dps.IndividualEnrollment, m string) (*dps.IndividualEnrollment, error) {
			return s.PutEnrollment(ctx, e, m)
		},
		get: func(ctx context.Context, s store.Store, id string) (*dps.IndividualEnrollment, error) {
			return s.Enrollment(ctx, id)
		},
		del:    func(ctx context.Context, s store.Store, id, m string) error { return s.DeleteEnrollment(ctx, id, m) },
		record: func(e *dps.IndividualEnrollment) store.Record { return store.Record{Enrollment: e} },
		setMeta: func(e *dps.IndividualEnrollment, etag string, c, u time.Time) {
			e.Etag, e.CreatedDateTimeUtc, e.LastUpdatedDateTimeUtc = etag, dps.NewTime(c), dps.NewTime(u)
		},
	}
}

func groupKind() kind[*dps.EnrollmentGroup] {
	return kind[*dps.EnrollmentGroup]{
		make: func(id, c string) *dps.EnrollmentGroup {
			return &dps.EnrollmentGroup{EnrollmentGroupID: id, EnrollmentSettings: dps.EnrollmentSettings{IotHubHostName: c, Attestation: symmetricKey(2), ProvisioningStatus: dps.ProvisioningEnabled}}
		},
		id:         func(g *dps.EnrollmentGroup) string { return g.EnrollmentGroupID },
		content:    func(g *dps.EnrollmentGroup) string { return g.IotHubHostName },
		setContent: func(g *dps.EnrollmentGroup, c string) { g.IotHubHostName = c },
		etag:       func(g *dps.EnrollmentGroup) string { return g.Etag },
		created:    func(g *dps.EnrollmentGroup) time.Time { return tm(g.CreatedDateTimeUtc) },
		updated:    func(g *dps.EnrollmentGroup) time.Time { return tm(g.LastUpdatedDateTimeUtc) },
		put: func(ctx context.Context, s store.Store, g *dps.EnrollmentGroup, m string) (*dps.EnrollmentGroup, error) {
			return s.PutGroup(ctx, g, m)
		},
		get: func(ctx context.Context, s store.Store, id string) (*dps.EnrollmentGroup, error) {
			return s.Group(ctx, id)
		},
		del:    func(ctx context.Context, s store.Store, id, m string) error { return s.DeleteGroup(ctx, id, m) },
		record: func(g *dps.EnrollmentGroup) store.Record { return store.Record{Group: g} },
		setMeta: func(g *dps.EnrollmentGroup, etag string, c, u time.Time) {
			g.Etag, g.CreatedDateTimeUtc, g.LastUpdatedDateTimeUtc = etag, dps.NewTime(c), dps.NewTime(u)
		},
	}
}

func policyKind() kind[*store.Policy] {
	return kind[*store.Policy]{
		make: func(id, c string) *store.Policy {
			return &store.Policy{Name: id, PrimaryKey: c, SecondaryKey: "c2Vjb25kYXJ5", Rights: []string{dps.RightEnrollmentRead, dps.RightEnrollmentWrite}}
		},
		id:         func(p *store.Policy) string { return p.Name },
		content:    func(p *store.Policy) string { return p.PrimaryKey },
		setContent: func(p *store.Policy, c string) { p.PrimaryKey = c },
		etag:       func(p *store.Policy) string { return p.Etag },
		created:    func(p *store.Policy) time.Time { return p.Created },
		updated:    func(p *store.Policy) time.Time { return p.Updated },
		put: func(ctx context.Context, s store.Store, p *store.Policy, m string) (*store.Policy, error) {
			return s.PutPolicy(ctx, p, m)
		},
		get:    func(ctx context.Context, s store.Store, id string) (*store.Policy, error) { return s.Policy(ctx, id) },
		del:    func(ctx context.Context, s store.Store, id, m string) error { return s.DeletePolicy(ctx, id, m) },
		record: func(p *store.Policy) store.Record { return store.Record{Policy: p} },
		setMeta: func(p *store.Policy, etag string, c, u time.Time) {
			p.Etag, p.Created, p.Updated = etag, c, u
		},
	}
}

func caKind(certs testCerts) kind[*store.CACertificate] {
	return kind[*store.CACertificate]{
		make: func(id, c string) *store.CACertificate {
			return &store.CACertificate{Name: id, CertificateDER: certs.a.der, SHA256Thumbprint: certs.a.thumb,
				Subject: certs.a.subject(), VerificationCode: c}
		},
		id:         func(c *store.CACertificate) string { return c.Name },
		content:    func(c *store.CACertificate) string { return c.VerificationCode },
		setContent: func(c *store.CACertificate, v string) { c.VerificationCode = v },
		etag:       func(c *store.CACertificate) string { return c.Etag },
		created:    func(c *store.CACertificate) time.Time { return c.Created },
		updated:    func(c *store.CACertificate) time.Time { return c.Updated },
		put: func(ctx context.Context, s store.Store, c *store.CACertificate, m string) (*store.CACertificate, error) {
			return s.PutCACertificate(ctx, c, m)
		},
		get: func(ctx context.Context, s store.Store, id string) (*store.CACertificate, error) {
			return s.CACertificate(ctx, id)
		},
		del:    func(ctx context.Context, s store.Store, id, m string) error { return s.DeleteCACertificate(ctx, id, m) },
		record: func(c *store.CACertificate) store.Record { return store.Record{CACertificate: c} },
		setMeta: func(c *store.CACertificate, etag string, cr, u time.Time) {
			c.Etag, c.Created, c.Updated = etag, cr, u
		},
	}
}

func hubKind() kind[*store.LinkedHub] {
	return kind[*store.LinkedHub]{
		make: func(id, c string) *store.LinkedHub {
			return &store.LinkedHub{Name: id, ConnectionString: "HostName=" + id + ";SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5",
				Location: c, AllocationWeight: 3, ApplyAllocationPolicy: true}
		},
		id:         func(h *store.LinkedHub) string { return h.Name },
		content:    func(h *store.LinkedHub) string { return h.Location },
		setContent: func(h *store.LinkedHub, c string) { h.Location = c },
		etag:       func(h *store.LinkedHub) string { return h.Etag },
		created:    func(h *store.LinkedHub) time.Time { return h.Created },
		updated:    func(h *store.LinkedHub) time.Time { return h.Updated },
		put: func(ctx context.Context, s store.Store, h *store.LinkedHub, m string) (*store.LinkedHub, error) {
			return s.PutLinkedHub(ctx, h, m)
		},
		get: func(ctx context.Context, s store.Store, id string) (*store.LinkedHub, error) {
			return s.LinkedHub(ctx, id)
		},
		del:    func(ctx context.Context, s store.Store, id, m string) error { return s.DeleteLinkedHub(ctx, id, m) },
		record: func(h *store.LinkedHub) store.Record { return store.Record{LinkedHub: h} },
		setMeta: func(h *store.LinkedHub, etag string, c, u time.Time) {
			h.Etag, h.Created, h.Updated = etag, c, u
		},
	}
}

func registrationKind() kind[*store.Registration] {
	return kind[*store.Registration]{
		make: func(id, c string) *store.Registration {
			return &store.Registration{Result: &dps.DeviceRegistrationResult{
				RegistrationID: id, DeviceID: id, AssignedHub: c, Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment,
			}}
		},
		id:         func(r *store.Registration) string { return r.Result.RegistrationID },
		content:    func(r *store.Registration) string { return r.Result.AssignedHub },
		setContent: func(r *store.Registration, c string) { r.Result.AssignedHub = c },
		etag:       func(r *store.Registration) string { return r.Result.Etag },
		created:    func(r *store.Registration) time.Time { return tm(r.Result.CreatedDateTimeUtc) },
		updated:    func(r *store.Registration) time.Time { return tm(r.Result.LastUpdatedDateTimeUtc) },
		put: func(ctx context.Context, s store.Store, r *store.Registration, m string) (*store.Registration, error) {
			return s.SaveRegistration(ctx, r, m, nil)
		},
		get: func(ctx context.Context, s store.Store, id string) (*store.Registration, error) {
			return s.Registration(ctx, id)
		},
		del:    func(ctx context.Context, s store.Store, id, m string) error { return s.DeleteRegistration(ctx, id, m) },
		record: func(r *store.Registration) store.Record { return store.Record{Registration: r} },
		setMeta: func(r *store.Registration, etag string, c, u time.Time) {
			r.Result.Etag, r.Result.CreatedDateTimeUtc, r.Result.LastUpdatedDateTimeUtc = etag, dps.NewTime(c), dps.NewTime(u)
		},
		registrationEtag: true,
	}
}

// checkEtag fails t unless etag has the shape Azure gives it.
func (k kind[T]) checkEtag(t *testing.T, etag string) {
	t.Helper()
	inner := etag
	if k.registrationEtag {
		b, err := base64.StdEncoding.DecodeString(etag)
		if err != nil {
			t.Fatalf("registration etag %q is not base64: %v", etag, err)
		}
		inner = string(b)
	}
	if len(inner) < 3 || !strings.HasPrefix(inner, `"`) || !strings.HasSuffix(inner, `"`) {
		t.Fatalf("etag %q (%q): want a quoted value", etag, inner)
	}
}

// otherQuoting returns the etag as a client might send it instead: without
// its quotes, or re-quoted when it has none.
func (k kind[T]) otherQuoting(etag string) string {
	if strings.HasPrefix(etag, `"`) {
		return strings.Trim(etag, `"`)
	}
	return `"` + etag + `"`
}

// mustGet reads id and checks its content.
func (k kind[T]) mustGet(t *testing.T, s store.Store, id, content string) T {
	t.Helper()
	v, err := k.get(bg(t), s, id)
	must(t, err, "get "+id)
	if got := k.content(v); got != content {
		t.Fatalf("get %s: content %q, want %q", id, got, content)
	}
	return v
}

// sameMeta fails t unless a and b carry the same etag and timestamps.
func (k kind[T]) sameMeta(t *testing.T, what string, a, b T) {
	t.Helper()
	if k.etag(a) != k.etag(b) || !k.created(a).Equal(k.created(b)) || !k.updated(a).Equal(k.updated(b)) {
		t.Fatalf("%s: etag/created/updated %q %v %v, want %q %v %v", what,
			k.etag(a), k.created(a), k.updated(a), k.etag(b), k.created(b), k.updated(b))
	}
}

func testRecords[T any](t *testing.T, open func(*testing.T) store.Store, k kind[T]) {
	create := func(t *testing.T, s store.Store, id, content string) T {
		t.Helper()
		v, err := k.put(bg(t), s, k.make(id, content), "")
		must(t, err, "create "+id)
		return v
	}

	t.Run("get/missing is not found", func(t *testing.T) {
		s := open(t)
		_, err := k.get(bg(t), s, "missing-1")
		wantErr(t, err, store.ErrNotFound, "get")
	})

	t.Run("put/create sets etag and timestamps", func(t *testing.T) {
		s := open(t)
		v := create(t, s, "rec-1", "v1")
		k.checkEtag(t, k.etag(v))
		if k.created(v).IsZero() || k.updated(v).IsZero() {
			t.Fatalf("created %v, updated %v: want both set", k.created(v), k.updated(v))
		}
		if !k.created(v).Equal(k.updated(v)) {
			t.Fatalf("created %v != updated %v on create", k.created(v), k.updated(v))
		}
		if got := k.content(v); got != "v1" || k.id(v) != "rec-1" {
			t.Fatalf("put returned %q/%q, want rec-1/v1", k.id(v), got)
		}
		got := k.mustGet(t, s, "rec-1", "v1")
		k.sameMeta(t, "get after create", got, v)
	})

	t.Run("put/create-only conflicts on existing", func(t *testing.T) {
		s := open(t)
		v := create(t, s, "rec-1", "v1")
		_, err := k.put(bg(t), s, k.make("rec-1", "v2"), "")
		wantErr(t, err, store.ErrConflict, "second create")
		got := k.mustGet(t, s, "rec-1", "v1")
		k.sameMeta(t, "after conflict", got, v)
	})

	t.Run("put/star creates", func(t *testing.T) {
		s := open(t)
		v, err := k.put(bg(t), s, k.make("rec-1", "v1"), "*")
		must(t, err, "put *")
		k.checkEtag(t, k.etag(v))
		k.mustGet(t, s, "rec-1", "v1")
	})

	t.Run("put/star overwrites, keeps created, advances updated", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		v2, err := k.put(bg(t), s, k.make("rec-1", "v2"), "*")
		must(t, err, "put *")
		if k.content(v2) != "v2" {
			t.Fatalf("content %q, want v2", k.content(v2))
		}
		if !k.created(v2).Equal(k.created(v1)) {
			t.Fatalf("created changed on overwrite: %v -> %v", k.created(v1), k.created(v2))
		}
		if !k.updated(v2).After(k.updated(v1)) {
			t.Fatalf("updated did not advance: %v -> %v", k.updated(v1), k.updated(v2))
		}
		if k.etag(v2) == k.etag(v1) {
			t.Fatalf("etag unchanged on overwrite: %q", k.etag(v2))
		}
		got := k.mustGet(t, s, "rec-1", "v2")
		k.sameMeta(t, "get after overwrite", got, v2)
	})

	t.Run("put/matching etag overwrites", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		v2, err := k.put(bg(t), s, k.make("rec-1", "v2"), k.etag(v1))
		must(t, err, "put with etag")
		if !k.created(v2).Equal(k.created(v1)) || !k.updated(v2).After(k.updated(v1)) || k.etag(v2) == k.etag(v1) {
			t.Fatalf("overwrite meta: %q %v %v after %q %v %v", k.etag(v2), k.created(v2), k.updated(v2),
				k.etag(v1), k.created(v1), k.updated(v1))
		}
		k.mustGet(t, s, "rec-1", "v2")
	})

	t.Run("put/etag matches with or without quotes", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		v2, err := k.put(bg(t), s, k.make("rec-1", "v2"), k.otherQuoting(k.etag(v1)))
		must(t, err, fmt.Sprintf("put with etag %q for stored %q", k.otherQuoting(k.etag(v1)), k.etag(v1)))
		k.checkEtag(t, k.etag(v2))
		_, err = k.put(bg(t), s, k.make("rec-1", "v3"), k.etag(v2))
		must(t, err, "put with etag as returned")
		k.mustGet(t, s, "rec-1", "v3")
	})

	t.Run("put/stale etag fails", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		v2, err := k.put(bg(t), s, k.make("rec-1", "v2"), "*")
		must(t, err, "overwrite")
		_, err = k.put(bg(t), s, k.make("rec-1", "v3"), k.etag(v1))
		wantErr(t, err, store.ErrPreconditionFailed, "put with stale etag")
		_, err = k.put(bg(t), s, k.make("rec-1", "v3"), k.otherQuoting(k.etag(v1)))
		wantErr(t, err, store.ErrPreconditionFailed, "put with stale etag, other quoting")
		got := k.mustGet(t, s, "rec-1", "v2")
		k.sameMeta(t, "after failed put", got, v2)
	})

	t.Run("put/etag on missing record fails", func(t *testing.T) {
		s := open(t)
		other := create(t, s, "rec-2", "v1")
		_, err := k.put(bg(t), s, k.make("rec-1", "v1"), k.etag(other))
		wantErr(t, err, store.ErrPreconditionFailed, "put with etag of another record")
		_, err = k.get(bg(t), s, "rec-1")
		wantErr(t, err, store.ErrNotFound, "get after failed put")
	})

	t.Run("put/every write gets a new etag", func(t *testing.T) {
		s := open(t)
		v := create(t, s, "rec-1", "v0")
		seen := map[string]bool{k.etag(v): true}
		last := k.updated(v)
		for i := 1; i <= 6; i++ {
			ifMatch := "*"
			if i%2 == 0 {
				ifMatch = k.etag(v)
			}
			var err error
			v, err = k.put(bg(t), s, k.make("rec-1", fmt.Sprintf("v%d", i)), ifMatch)
			must(t, err, "overwrite")
			if seen[k.etag(v)] {
				t.Fatalf("write %d reused etag %q", i, k.etag(v))
			}
			seen[k.etag(v)] = true
			if !k.updated(v).After(last) {
				t.Fatalf("write %d: updated %v not after %v", i, k.updated(v), last)
			}
			last = k.updated(v)
		}
	})

	t.Run("put/ids are case-insensitive and keep the last spelling", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "Dev-1", "v1")
		for _, id := range []string{"dev-1", "DEV-1", "Dev-1"} {
			got := k.mustGet(t, s, id, "v1")
			if k.id(got) != "Dev-1" {
				t.Fatalf("get %s: id %q, want the stored spelling Dev-1", id, k.id(got))
			}
		}
		_, err := k.put(bg(t), s, k.make("dev-1", "v2"), "")
		wantErr(t, err, store.ErrConflict, "create-only with other case")
		v2, err := k.put(bg(t), s, k.make("DEV-1", "v2"), k.etag(v1))
		must(t, err, "overwrite with other case")
		if !k.created(v2).Equal(k.created(v1)) {
			t.Fatalf("created changed: %v -> %v", k.created(v1), k.created(v2))
		}
		got := k.mustGet(t, s, "dev-1", "v2")
		if k.id(got) != "DEV-1" {
			t.Fatalf("id %q, want the last spelling DEV-1", k.id(got))
		}
	})

	t.Run("put/returns fresh copies", func(t *testing.T) {
		s := open(t)
		in := k.make("rec-1", "v1")
		out, err := k.put(bg(t), s, in, "")
		must(t, err, "create")
		k.setContent(in, "changed-input")
		k.setContent(out, "changed-output")
		got := k.mustGet(t, s, "rec-1", "v1")
		k.setContent(got, "changed-get")
		k.mustGet(t, s, "rec-1", "v1")
	})

	t.Run("delete/unconditional", func(t *testing.T) {
		for _, ifMatch := range []string{"", "*"} {
			s := open(t)
			create(t, s, "rec-1", "v1")
			must(t, k.del(bg(t), s, "rec-1", ifMatch), fmt.Sprintf("delete ifMatch=%q", ifMatch))
			_, err := k.get(bg(t), s, "rec-1")
			wantErr(t, err, store.ErrNotFound, "get after delete")
		}
	})

	t.Run("delete/missing is not found", func(t *testing.T) {
		s := open(t)
		wantErr(t, k.del(bg(t), s, "missing-1", ""), store.ErrNotFound, "delete missing")
		wantErr(t, k.del(bg(t), s, "missing-1", "*"), store.ErrNotFound, "delete missing with *")
	})

	t.Run("delete/stale etag fails and keeps the record", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		_, err := k.put(bg(t), s, k.make("rec-1", "v2"), "*")
		must(t, err, "overwrite")
		wantErr(t, k.del(bg(t), s, "rec-1", k.etag(v1)), store.ErrPreconditionFailed, "delete with stale etag")
		k.mustGet(t, s, "rec-1", "v2")
	})

	t.Run("delete/etag on missing record fails", func(t *testing.T) {
		// The etag row of the ifMatch table applies to deletes too.
		s := open(t)
		other := create(t, s, "rec-2", "v1")
		wantErr(t, k.del(bg(t), s, "rec-1", k.etag(other)), store.ErrPreconditionFailed, "delete missing with etag")
	})

	t.Run("delete/matching etag deletes, with or without quotes", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		v2 := create(t, s, "rec-2", "v1")
		must(t, k.del(bg(t), s, "rec-1", k.etag(v1)), "delete with etag")
		must(t, k.del(bg(t), s, "REC-2", k.otherQuoting(k.etag(v2))), "delete with other quoting and case")
		for _, id := range []string{"rec-1", "rec-2"} {
			_, err := k.get(bg(t), s, id)
			wantErr(t, err, store.ErrNotFound, "get after delete")
		}
	})

	t.Run("delete/then create again", func(t *testing.T) {
		s := open(t)
		v1 := create(t, s, "rec-1", "v1")
		must(t, k.del(bg(t), s, "rec-1", ""), "delete")
		v2 := create(t, s, "rec-1", "v2")
		if k.etag(v2) == k.etag(v1) {
			t.Fatalf("recreated record has the old etag %q", k.etag(v2))
		}
		_, err := k.put(bg(t), s, k.make("rec-1", "v3"), k.etag(v1))
		wantErr(t, err, store.ErrPreconditionFailed, "put with the deleted record's etag")
		k.mustGet(t, s, "rec-1", "v2")
	})
}
