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
	make    func(id, content string) T // a valid record; content is a field the test reads back
	id      func(T) string
	content func(T) *string
	meta    func(T) recordMeta
	setMeta func(T, recordMeta) // what Restore keeps
	put     func(s store.Store, ctx context.Context, v T, ifMatch string) (T, error)
	get     func(s store.Store, ctx context.Context, id string) (T, error)
	del     func(s store.Store, ctx context.Context, id, ifMatch string) error
	record  func(T) store.Record // wraps a value for Restore
	// registrationEtag: the etag is base64 of a quoted value rather than a
	// quoted value.
	registrationEtag bool
}

// recordMeta is what the store sets on every write.
type recordMeta struct {
	etag             string
	created, updated time.Time
}

func (k kind[T]) etag(v T) string       { return k.meta(v).etag }
func (k kind[T]) created(v T) time.Time { return k.meta(v).created }
func (k kind[T]) updated(v T) time.Time { return k.meta(v).updated }

// dpsMeta and setDPSMeta read and write the metadata of the DPS types,
// whose timestamps are optional.
func dpsMeta(etag string, created, updated *dps.Time) recordMeta {
	return recordMeta{etag, tm(created), tm(updated)}
}

func setDPSMeta(etag *string, created, updated **dps.Time, m recordMeta) {
	*etag, *created, *updated = m.etag, dps.NewTime(m.created), dps.NewTime(m.updated)
}

func enrollmentKind() kind[*dps.IndividualEnrollment] {
	type E = *dps.IndividualEnrollment
	return kind[E]{
		make: func(id, c string) E {
			return &dps.IndividualEnrollment{RegistrationID: id, DeviceID: c, EnrollmentSettings: dps.EnrollmentSettings{Attestation: symmetricKey(1), ProvisioningStatus: dps.ProvisioningEnabled}}
		},
		id:      func(e E) string { return e.RegistrationID },
		content: func(e E) *string { return &e.DeviceID },
		meta:    func(e E) recordMeta { return dpsMeta(e.Etag, e.CreatedDateTimeUtc, e.LastUpdatedDateTimeUtc) },
		setMeta: func(e E, m recordMeta) { setDPSMeta(&e.Etag, &e.CreatedDateTimeUtc, &e.LastUpdatedDateTimeUtc, m) },
		put:     store.Store.PutEnrollment, get: store.Store.Enrollment, del: store.Store.DeleteEnrollment,
		record: func(e E) store.Record { return store.Record{Enrollment: e} },
	}
}

func groupKind() kind[*dps.EnrollmentGroup] {
	type G = *dps.EnrollmentGroup
	return kind[G]{
		make: func(id, c string) G {
			return &dps.EnrollmentGroup{EnrollmentGroupID: id, EnrollmentSettings: dps.EnrollmentSettings{IotHubHostName: c, Attestation: symmetricKey(2), ProvisioningStatus: dps.ProvisioningEnabled}}
		},
		id:      func(g G) string { return g.EnrollmentGroupID },
		content: func(g G) *string { return &g.IotHubHostName },
		meta:    func(g G) recordMeta { return dpsMeta(g.Etag, g.CreatedDateTimeUtc, g.LastUpdatedDateTimeUtc) },
		setMeta: func(g G, m recordMeta) { setDPSMeta(&g.Etag, &g.CreatedDateTimeUtc, &g.LastUpdatedDateTimeUtc, m) },
		put:     store.Store.PutGroup, get: store.Store.Group, del: store.Store.DeleteGroup,
		record: func(g G) store.Record { return store.Record{Group: g} },
	}
}

func registrationKind() kind[*store.Registration] {
	type R = *store.Registration
	return kind[R]{
		make: func(id, c string) R {
			return &store.Registration{Result: &dps.DeviceRegistrationResult{
				RegistrationID: id, DeviceID: id, AssignedHub: c, Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment,
			}}
		},
		id:      func(r R) string { return r.Result.RegistrationID },
		content: func(r R) *string { return &r.Result.AssignedHub },
		meta: func(r R) recordMeta {
			return dpsMeta(r.Result.Etag, r.Result.CreatedDateTimeUtc, r.Result.LastUpdatedDateTimeUtc)
		},
		setMeta: func(r R, m recordMeta) {
			setDPSMeta(&r.Result.Etag, &r.Result.CreatedDateTimeUtc, &r.Result.LastUpdatedDateTimeUtc, m)
		},
		put: func(s store.Store, ctx context.Context, r R, m string) (R, error) {
			return s.SaveRegistration(ctx, r, m, nil)
		},
		get: store.Store.Registration, del: store.Store.DeleteRegistration,
		record:           func(r R) store.Record { return store.Record{Registration: r} },
		registrationEtag: true,
	}
}

// The management records share their metadata fields.

func policyKind() kind[*store.Policy] {
	return kind[*store.Policy]{
		make: func(id, c string) *store.Policy {
			return &store.Policy{Name: id, PrimaryKey: c, SecondaryKey: "c2Vjb25kYXJ5", Rights: []string{dps.RightEnrollmentRead, dps.RightEnrollmentWrite}}
		},
		id:      func(p *store.Policy) string { return p.Name },
		content: func(p *store.Policy) *string { return &p.PrimaryKey },
		meta:    func(p *store.Policy) recordMeta { return recordMeta{p.Etag, p.Created, p.Updated} },
		setMeta: func(p *store.Policy, m recordMeta) { p.Etag, p.Created, p.Updated = m.etag, m.created, m.updated },
		put:     store.Store.PutPolicy, get: store.Store.Policy, del: store.Store.DeletePolicy,
		record: func(p *store.Policy) store.Record { return store.Record{Policy: p} },
	}
}

func runtimeSettingKind() kind[*store.RuntimeSetting] {
	type R = *store.RuntimeSetting
	return kind[R]{
		make:    func(id, c string) R { return &store.RuntimeSetting{Name: id, Doc: c} },
		id:      func(r R) string { return r.Name },
		content: func(r R) *string { return &r.Doc },
		meta:    func(r R) recordMeta { return recordMeta{r.Etag, r.Created, r.Updated} },
		setMeta: func(r R, m recordMeta) { r.Etag, r.Created, r.Updated = m.etag, m.created, m.updated },
		put:     store.Store.PutRuntimeSetting, get: store.Store.RuntimeSetting, del: store.Store.DeleteRuntimeSetting,
	}
}

func caKind(certs testCerts) kind[*store.CACertificate] {
	type C = *store.CACertificate
	return kind[C]{
		make: func(id, c string) C {
			return &store.CACertificate{Name: id, CertificateDER: certs.a.der, SHA256Thumbprint: certs.a.thumb,
				Subject: certs.a.subject(), VerificationCode: c}
		},
		id:      func(c C) string { return c.Name },
		content: func(c C) *string { return &c.VerificationCode },
		meta:    func(c C) recordMeta { return recordMeta{c.Etag, c.Created, c.Updated} },
		setMeta: func(c C, m recordMeta) { c.Etag, c.Created, c.Updated = m.etag, m.created, m.updated },
		put:     store.Store.PutCACertificate, get: store.Store.CACertificate, del: store.Store.DeleteCACertificate,
		record: func(c C) store.Record { return store.Record{CACertificate: c} },
	}
}

func hubKind() kind[*store.LinkedHub] {
	type H = *store.LinkedHub
	return kind[H]{
		make: func(id, c string) H {
			return &store.LinkedHub{Name: id, ConnectionString: "HostName=" + id + ";SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5",
				Location: c, AllocationWeight: 3, ApplyAllocationPolicy: true}
		},
		id:      func(h H) string { return h.Name },
		content: func(h H) *string { return &h.Location },
		meta:    func(h H) recordMeta { return recordMeta{h.Etag, h.Created, h.Updated} },
		setMeta: func(h H, m recordMeta) { h.Etag, h.Created, h.Updated = m.etag, m.created, m.updated },
		put:     store.Store.PutLinkedHub, get: store.Store.LinkedHub, del: store.Store.DeleteLinkedHub,
		record: func(h H) store.Record { return store.Record{LinkedHub: h} },
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
	v, err := k.get(s, bg(t), id)
	must(t, err, "get "+id)
	if got := *k.content(v); got != content {
		t.Fatalf("get %s: content %q, want %q", id, got, content)
	}
	return v
}

// mustPut writes a record with the given content.
func (k kind[T]) mustPut(t *testing.T, s store.Store, id, content, ifMatch string) T {
	t.Helper()
	v, err := k.put(s, bg(t), k.make(id, content), ifMatch)
	must(t, err, fmt.Sprintf("put %s (If-Match %q)", id, ifMatch))
	return v
}

// create creates a record, as a create-only put.
func (k kind[T]) create(t *testing.T, s store.Store, id, content string) T {
	t.Helper()
	return k.mustPut(t, s, id, content, "")
}

// refusedPut checks that a put fails with want and changes nothing.
func (k kind[T]) refusedPut(t *testing.T, s store.Store, id, ifMatch string, want error) {
	t.Helper()
	before, errBefore := k.get(s, bg(t), id)
	_, err := k.put(s, bg(t), k.make(id, "refused"), ifMatch)
	wantErr(t, err, want, fmt.Sprintf("put %s with If-Match %q", id, ifMatch))
	after, errAfter := k.get(s, bg(t), id)
	if errBefore != nil {
		wantErr(t, errAfter, store.ErrNotFound, "get after a refused put")
		return
	}
	must(t, errAfter, "get after a refused put")
	k.sameMeta(t, "after a refused put", after, before)
	if *k.content(after) != *k.content(before) {
		t.Fatalf("a refused put changed the content from %q to %q", *k.content(before), *k.content(after))
	}
}

// gone checks that id is not found.
func (k kind[T]) gone(t *testing.T, s store.Store, id string) {
	t.Helper()
	_, err := k.get(s, bg(t), id)
	wantErr(t, err, store.ErrNotFound, "get "+id)
}

// sameMeta fails t unless a and b carry the same etag and timestamps.
func (k kind[T]) sameMeta(t *testing.T, what string, a, b T) {
	t.Helper()
	if ma, mb := k.meta(a), k.meta(b); ma.etag != mb.etag || !ma.created.Equal(mb.created) || !ma.updated.Equal(mb.updated) {
		t.Fatalf("%s: etag/created/updated %+v, want %+v", what, ma, mb)
	}
}

// overwrote fails t unless v2 is an overwrite of v1: the same creation
// time, a later update, a new etag.
func (k kind[T]) overwrote(t *testing.T, v1, v2 T) {
	t.Helper()
	m1, m2 := k.meta(v1), k.meta(v2)
	if !m2.created.Equal(m1.created) || !m2.updated.After(m1.updated) || m2.etag == m1.etag {
		t.Fatalf("overwrite: etag/created/updated %+v after %+v; want the same created, a later updated, a new etag", m2, m1)
	}
}

// testRecords runs the rules every versioned record follows: the If-Match
// rules of package store, case-insensitive IDs, fresh copies.
func testRecords[T any](t *testing.T, open func(*testing.T) store.Store, k kind[T]) {
	for _, rule := range []struct {
		name string
		test func(*testing.T, store.Store)
	}{
		{"get/missing is not found", func(t *testing.T, s store.Store) { k.gone(t, s, "missing-1") }},
		{"put/create sets etag and timestamps", k.testCreate},
		{"put/create-only conflicts on existing", func(t *testing.T, s store.Store) {
			k.create(t, s, "rec-1", "v1")
			k.refusedPut(t, s, "rec-1", "", store.ErrConflict)
		}},
		{"put/star creates", func(t *testing.T, s store.Store) {
			k.checkEtag(t, k.etag(k.mustPut(t, s, "rec-1", "v1", "*")))
			k.mustGet(t, s, "rec-1", "v1")
		}},
		{"put/star overwrites, keeps created, advances updated", func(t *testing.T, s store.Store) {
			k.testOverwrite(t, s, func(T) string { return "*" })
		}},
		{"put/matching etag overwrites", func(t *testing.T, s store.Store) { k.testOverwrite(t, s, k.etag) }},
		{"put/etag matches with or without quotes", func(t *testing.T, s store.Store) {
			k.testOverwrite(t, s, func(v T) string { return k.otherQuoting(k.etag(v)) })
		}},
		{"put/stale etag fails", func(t *testing.T, s store.Store) {
			v1 := k.create(t, s, "rec-1", "v1")
			k.mustPut(t, s, "rec-1", "v2", "*")
			k.refusedPut(t, s, "rec-1", k.etag(v1), store.ErrPreconditionFailed)
			k.refusedPut(t, s, "rec-1", k.otherQuoting(k.etag(v1)), store.ErrPreconditionFailed)
			k.mustGet(t, s, "rec-1", "v2")
		}},
		{"put/etag on missing record fails", func(t *testing.T, s store.Store) {
			other := k.create(t, s, "rec-2", "v1")
			k.refusedPut(t, s, "rec-1", k.etag(other), store.ErrPreconditionFailed)
		}},
		{"put/every write gets a new etag", k.testNewEtags},
		{"put/ids are case-insensitive and keep the last spelling", k.testCase},
		{"put/returns fresh copies", func(t *testing.T, s store.Store) {
			in := k.make("rec-1", "v1")
			out, err := k.put(s, bg(t), in, "")
			must(t, err, "create")
			*k.content(in), *k.content(out) = "changed-input", "changed-output"
			*k.content(k.mustGet(t, s, "rec-1", "v1")) = "changed-get"
			k.mustGet(t, s, "rec-1", "v1")
		}},
		{"delete/unconditional", func(t *testing.T, s store.Store) {
			for _, ifMatch := range []string{"", "*"} {
				k.create(t, s, "rec-1", "v1")
				must(t, k.del(s, bg(t), "rec-1", ifMatch), fmt.Sprintf("delete ifMatch=%q", ifMatch))
				k.gone(t, s, "rec-1")
			}
		}},
		{"delete/missing is not found", func(t *testing.T, s store.Store) {
			wantErr(t, k.del(s, bg(t), "missing-1", ""), store.ErrNotFound, "delete missing")
			wantErr(t, k.del(s, bg(t), "missing-1", "*"), store.ErrNotFound, "delete missing with *")
		}},
		{"delete/stale etag fails and keeps the record", func(t *testing.T, s store.Store) {
			v1 := k.create(t, s, "rec-1", "v1")
			k.mustPut(t, s, "rec-1", "v2", "*")
			wantErr(t, k.del(s, bg(t), "rec-1", k.etag(v1)), store.ErrPreconditionFailed, "delete with stale etag")
			k.mustGet(t, s, "rec-1", "v2")
		}},
		{"delete/etag on missing record fails", func(t *testing.T, s store.Store) {
			// The etag row of the ifMatch table applies to deletes too.
			other := k.create(t, s, "rec-2", "v1")
			wantErr(t, k.del(s, bg(t), "rec-1", k.etag(other)), store.ErrPreconditionFailed, "delete missing with etag")
		}},
		{"delete/matching etag deletes, with or without quotes", func(t *testing.T, s store.Store) {
			v1, v2 := k.create(t, s, "rec-1", "v1"), k.create(t, s, "rec-2", "v1")
			must(t, k.del(s, bg(t), "rec-1", k.etag(v1)), "delete with etag")
			must(t, k.del(s, bg(t), "REC-2", k.otherQuoting(k.etag(v2))), "delete with other quoting and case")
			k.gone(t, s, "rec-1")
			k.gone(t, s, "rec-2")
		}},
		{"delete/then create again", func(t *testing.T, s store.Store) {
			v1 := k.create(t, s, "rec-1", "v1")
			must(t, k.del(s, bg(t), "rec-1", ""), "delete")
			if v2 := k.create(t, s, "rec-1", "v2"); k.etag(v2) == k.etag(v1) {
				t.Fatalf("recreated record has the old etag %q", k.etag(v2))
			}
			k.refusedPut(t, s, "rec-1", k.etag(v1), store.ErrPreconditionFailed)
			k.mustGet(t, s, "rec-1", "v2")
		}},
	} {
		t.Run(rule.name, func(t *testing.T) { rule.test(t, open(t)) })
	}
}

func (k kind[T]) testCreate(t *testing.T, s store.Store) {
	v := k.create(t, s, "rec-1", "v1")
	k.checkEtag(t, k.etag(v))
	if m := k.meta(v); m.created.IsZero() || !m.created.Equal(m.updated) {
		t.Fatalf("created %v, updated %v: want both set, and equal on create", m.created, m.updated)
	}
	if got := *k.content(v); got != "v1" || k.id(v) != "rec-1" {
		t.Fatalf("put returned %q/%q, want rec-1/v1", k.id(v), got)
	}
	k.sameMeta(t, "get after create", k.mustGet(t, s, "rec-1", "v1"), v)
}

// testOverwrite overwrites a record with the If-Match ifMatch(it) gives.
func (k kind[T]) testOverwrite(t *testing.T, s store.Store, ifMatch func(T) string) {
	v1 := k.create(t, s, "rec-1", "v1")
	v2 := k.mustPut(t, s, "rec-1", "v2", ifMatch(v1))
	k.checkEtag(t, k.etag(v2))
	if *k.content(v2) != "v2" {
		t.Fatalf("content %q, want v2", *k.content(v2))
	}
	k.overwrote(t, v1, v2)
	k.sameMeta(t, "get after overwrite", k.mustGet(t, s, "rec-1", "v2"), v2)
	// The etag returned is the one to match next.
	k.mustPut(t, s, "rec-1", "v3", k.etag(v2))
	k.mustGet(t, s, "rec-1", "v3")
}

func (k kind[T]) testNewEtags(t *testing.T, s store.Store) {
	v := k.create(t, s, "rec-1", "v0")
	seen := map[string]bool{k.etag(v): true}
	for i := 1; i <= 6; i++ {
		ifMatch := "*"
		if i%2 == 0 {
			ifMatch = k.etag(v)
		}
		prev := v
		v = k.mustPut(t, s, "rec-1", fmt.Sprintf("v%d", i), ifMatch)
		if seen[k.etag(v)] {
			t.Fatalf("write %d reused etag %q", i, k.etag(v))
		}
		seen[k.etag(v)] = true
		k.overwrote(t, prev, v)
	}
}

func (k kind[T]) testCase(t *testing.T, s store.Store) {
	v1 := k.create(t, s, "Dev-1", "v1")
	for _, id := range []string{"dev-1", "DEV-1", "Dev-1"} {
		if got := k.mustGet(t, s, id, "v1"); k.id(got) != "Dev-1" {
			t.Fatalf("get %s: id %q, want the stored spelling Dev-1", id, k.id(got))
		}
	}
	k.refusedPut(t, s, "dev-1", "", store.ErrConflict)
	k.overwrote(t, v1, k.mustPut(t, s, "DEV-1", "v2", k.etag(v1)))
	if got := k.mustGet(t, s, "dev-1", "v2"); k.id(got) != "DEV-1" {
		t.Fatalf("id %q, want the last spelling DEV-1", k.id(got))
	}
}
