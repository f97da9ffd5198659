package storetest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// Restore keeps what an export carries; these times and etags are what a
// record of another database would hold.
var (
	restoreCreated = time.Date(2021, 6, 7, 8, 9, 10, 1234500, time.UTC)
	restoreUpdated = time.Date(2022, 1, 2, 3, 4, 5, 6789000, time.UTC)
)

func (k kind[T]) foreignEtag(n int) string {
	e := fmt.Sprintf(`"%08x-0000-0000-0000-5e8fe3d10000"`, n)
	if k.registrationEtag {
		return base64.StdEncoding.EncodeToString([]byte(e))
	}
	return e
}

func testRestore[T any](t *testing.T, open func(*testing.T) store.Store, k kind[T]) {
	restore := func(t *testing.T, s store.Store, vs ...T) {
		t.Helper()
		recs := make([]store.Record, len(vs))
		for i, v := range vs {
			recs[i] = k.record(v)
		}
		must(t, s.Restore(bg(t), recs), "restore")
	}
	foreign := func(id, content string, n int) T {
		v := k.make(id, content)
		k.setMeta(v, recordMeta{k.foreignEtag(n), restoreCreated, restoreUpdated})
		return v
	}

	t.Run("restore/creates with the given etag and timestamps", func(t *testing.T) {
		s := open(t)
		restore(t, s, foreign("Rec-1", "v1", 1), foreign("rec-2", "v2", 2))
		for i, id := range []string{"rec-1", "rec-2"} {
			got := k.mustGet(t, s, id, fmt.Sprintf("v%d", i+1))
			if k.etag(got) != k.foreignEtag(i+1) || !k.created(got).Equal(restoreCreated) || !k.updated(got).Equal(restoreUpdated) {
				t.Fatalf("restored %s: etag %q created %v updated %v, want %q %v %v", id,
					k.etag(got), k.created(got), k.updated(got), k.foreignEtag(i+1), restoreCreated, restoreUpdated)
			}
		}
		if got := k.mustGet(t, s, "REC-1", "v1"); k.id(got) != "Rec-1" {
			t.Fatalf("id %q, want the restored spelling Rec-1", k.id(got))
		}
	})

	t.Run("restore/overwrites, and the restored etag is the one to match", func(t *testing.T) {
		s := open(t)
		old, err := k.put(s, bg(t), k.make("rec-1", "v1"), "")
		must(t, err, "create")
		restore(t, s, foreign("rec-1", "v2", 7))
		got := k.mustGet(t, s, "rec-1", "v2")
		if k.etag(got) != k.foreignEtag(7) || !k.created(got).Equal(restoreCreated) {
			t.Fatalf("after restore: etag %q created %v", k.etag(got), k.created(got))
		}
		_, err = k.put(s, bg(t), k.make("rec-1", "v3"), k.etag(old))
		wantErr(t, err, store.ErrPreconditionFailed, "put with the overwritten etag")
		v3, err := k.put(s, bg(t), k.make("rec-1", "v3"), k.foreignEtag(7))
		must(t, err, "put with the restored etag")
		if !k.created(v3).Equal(restoreCreated) || !k.updated(v3).After(restoreUpdated) {
			t.Fatalf("put after restore: created %v updated %v", k.created(v3), k.updated(v3))
		}
	})

	t.Run("restore/fills a missing etag and timestamps", func(t *testing.T) {
		s := open(t)
		before := time.Now().Add(-time.Minute)
		restore(t, s, k.make("rec-1", "v1"))
		got := k.mustGet(t, s, "rec-1", "v1")
		k.checkEtag(t, k.etag(got))
		if k.created(got).Before(before) || !k.updated(got).Equal(k.created(got)) {
			t.Fatalf("created %v updated %v: want now, twice", k.created(got), k.updated(got))
		}
	})

	t.Run("restore/round-trips a record read from another store", func(t *testing.T) {
		a, b := open(t), open(t)
		_, err := k.put(a, bg(t), k.make("Rec-1", "v1"), "")
		must(t, err, "create")
		v, err := k.put(a, bg(t), k.make("Rec-1", "v2"), "*")
		must(t, err, "overwrite")
		restore(t, b, v)
		got := k.mustGet(t, b, "rec-1", "v2")
		sameJSON(t, "restored record", got, v)
	})
}

// testRestoreAll: the writes of RestoreAll's fn commit together, or not at
// all, the instance included; inside, Instance sees what fn restored.
func testRestoreAll(t *testing.T, open func(*testing.T) store.Store) {
	recs := func(prefix string, n int) []store.Record {
		var rs []store.Record
		for i := range n {
			rs = append(rs, store.Record{Enrollment: enrollmentKind().make(fmt.Sprintf("%s-%d", prefix, i), "x")})
		}
		return rs
	}
	t.Run("all/commits every batch and the instance together", func(t *testing.T) {
		s := open(t)
		in := newInstance("0ne00000009")
		must(t, s.RestoreAll(bg(t), func(r store.Restorer) error {
			if _, err := r.Instance(bg(t)); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("instance before restoring it: %v, want not found", err)
			}
			if err := r.RestoreInstance(bg(t), in); err != nil {
				return err
			}
			got, err := r.Instance(bg(t))
			if err != nil || got.IDScope != in.IDScope {
				t.Errorf("instance inside the transaction: %+v, %v", got, err)
			}
			if err := r.Restore(bg(t), recs("a", 3)); err != nil {
				return err
			}
			return r.Restore(bg(t), recs("b", 2))
		}), "restore all")
		storedInstance(t, s, "restored", in)
		c, err := s.Counts(bg(t))
		must(t, err, "counts")
		if c.Enrollments != 5 {
			t.Fatalf("%d enrollments, want 5", c.Enrollments)
		}
	})

	t.Run("all/a failure writes nothing, not even the batches before it", func(t *testing.T) {
		s := open(t)
		old := newInstance("0ne00000001")
		_, err := s.InitInstance(bg(t), old)
		must(t, err, "init")
		must(t, s.Restore(bg(t), recs("kept", 1)), "restore")
		stop := errors.New("stop")
		for name, fail := range map[string]func(store.Restorer) error{
			"fn fails": func(store.Restorer) error { return stop },
			"store fails": func(r store.Restorer) error {
				return r.Restore(bg(t), []store.Record{{Enrollment: &dps.IndividualEnrollment{}}})
			},
		} {
			err := s.RestoreAll(bg(t), func(r store.Restorer) error {
				if err := r.RestoreInstance(bg(t), newInstance("0ne00000002")); err != nil {
					return err
				}
				if err := r.Restore(bg(t), recs("new", 600)); err != nil {
					return err
				}
				return fail(r)
			})
			if err == nil {
				t.Fatalf("%s: RestoreAll returned nil", name)
			}
			if name == "fn fails" && !errors.Is(err, stop) {
				t.Fatalf("%s: RestoreAll returned %v, not fn's error", name, err)
			}
			storedInstance(t, s, name+": the instance", old)
			c, err := s.Counts(bg(t))
			must(t, err, "counts")
			if c.Enrollments != 1 {
				t.Fatalf("%s: %d enrollments after the failed RestoreAll, want the 1 that was there", name, c.Enrollments)
			}
		}
	})
}

func testRestoreBatches(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	t.Run("a batch with a bad record writes nothing", func(t *testing.T) {
		s := open(t)
		good := enrollmentKind().make("good-1", "x")
		err := s.Restore(bg(t), []store.Record{{Enrollment: good}, {Enrollment: &dps.IndividualEnrollment{}}})
		if err == nil {
			t.Fatal("Restore accepted an enrollment without a registration ID")
		}
		_, err = s.Enrollment(bg(t), "good-1")
		wantErr(t, err, store.ErrNotFound, "the good record of the refused batch")
	})

	t.Run("a record holds exactly one item", func(t *testing.T) {
		s := open(t)
		for name, rec := range map[string]store.Record{
			"none": {},
			"two":  {Enrollment: enrollmentKind().make("dev-1", "x"), Policy: policyKind().make("p", "a2V5")},
		} {
			if err := s.Restore(bg(t), []store.Record{rec}); err == nil {
				t.Errorf("%s: Restore accepted it", name)
			}
		}
		_, err := s.Enrollment(bg(t), "dev-1")
		wantErr(t, err, store.ErrNotFound, "enrollment of the refused record")
	})

	t.Run("an empty batch is fine", func(t *testing.T) {
		s := open(t)
		must(t, s.Restore(bg(t), nil), "restore nothing")
	})

	t.Run("restored groups are indexed like written ones", func(t *testing.T) {
		s := open(t)
		must(t, s.Restore(bg(t), []store.Record{
			{Group: signingGroup("Signed", certs.a.withInfo(certs.a.pemText()), nil)},
			{Group: caRefGroup("ByCA", "Root-CA", "")},
			{Group: symmetricGroup("Keys")},
		}), "restore")
		gs, err := s.GroupsBySigningCert(bg(t), certs.a.thumb)
		must(t, err, "groups by signing cert")
		sameSet(t, "groups by signing cert", groupIDs(gs), []string{"Signed"})
		ders, err := s.SigningCertsBySubject(bg(t), certs.a.subject())
		must(t, err, "signing certs by subject")
		if len(ders) != 1 || !bytes.Equal(ders[0], certs.a.der) {
			t.Fatalf("signing certs by subject: %d certificates", len(ders))
		}
		gs, err = s.GroupsByCA(bg(t), "root-ca")
		must(t, err, "groups by CA")
		sameSet(t, "groups by CA", groupIDs(gs), []string{"ByCA"})
		gs, err = s.SymmetricKeyGroups(bg(t))
		must(t, err, "symmetric-key groups")
		sameSet(t, "symmetric-key groups", groupIDs(gs), []string{"Keys"})

		// Restoring the group again with another certificate replaces its
		// index rows.
		must(t, s.Restore(bg(t), []store.Record{{Group: signingGroup("Signed", certs.b.withInfo(certs.b.b64DER()), nil)}}), "restore again")
		gs, err = s.GroupsBySigningCert(bg(t), certs.a.thumb)
		must(t, err, "groups by the old signing cert")
		sameSet(t, "groups by the old signing cert", groupIDs(gs), nil)
		gs, err = s.GroupsBySigningCert(bg(t), certs.b.thumb)
		must(t, err, "groups by the new signing cert")
		sameSet(t, "groups by the new signing cert", groupIDs(gs), []string{"Signed"})
	})

	t.Run("restored registrations keep their group and payload", func(t *testing.T) {
		s := open(t)
		r := registrationKind().make("Dev-1", "hub1.azure-devices.net")
		r.EnrollmentGroupID = "Fleet"
		r.DevicePayload = json.RawMessage(`{"modelId": "dtmi:x;1"}`)
		registrationKind().setMeta(r, recordMeta{registrationKind().foreignEtag(3), restoreCreated, restoreUpdated})
		must(t, s.Restore(bg(t), []store.Record{{Registration: r}}), "restore")
		p, err := s.RegistrationsByGroup(bg(t), "fleet", "", 10)
		must(t, err, "registrations by group")
		if len(p.Items) != 1 {
			t.Fatalf("registrations by group: %d records, want 1", len(p.Items))
		}
		got := p.Items[0]
		if got.EnrollmentGroupID != "Fleet" || string(got.DevicePayload) != string(r.DevicePayload) {
			t.Fatalf("restored record: group %q payload %s", got.EnrollmentGroupID, got.DevicePayload)
		}
		sameJSON(t, "restored result", got.Result, r.Result)
	})

	t.Run("counts", func(t *testing.T) {
		s := open(t)
		c, err := s.Counts(bg(t))
		must(t, err, "counts")
		if *c != (store.Counts{}) {
			t.Fatalf("empty store counts %+v", *c)
		}
		must(t, s.Restore(bg(t), []store.Record{
			{Policy: policyKind().make("p1", "a2V5")},
			{CACertificate: caKind(certs).make("ca1", "code")},
			{CACertificate: caKind(certs).make("ca2", "code")},
			{LinkedHub: hubKind().make("hub1", "loc")},
			{Group: groupKind().make("g1", "x")},
			{Enrollment: enrollmentKind().make("e1", "x")},
			{Enrollment: enrollmentKind().make("e2", "x")},
			{Enrollment: enrollmentKind().make("e3", "x")},
			{Registration: registrationKind().make("r1", "hub1")},
		}), "restore")
		_, err = s.SaveRegistration(bg(t), registrationKind().make("r2", "hub1"), "", newOp("op-1", "r2", opBase.Add(time.Hour)))
		must(t, err, "save registration")
		c, err = s.Counts(bg(t))
		must(t, err, "counts")
		want := store.Counts{Policies: 1, CACertificates: 2, LinkedHubs: 1, Groups: 1, Enrollments: 3, Registrations: 2, Operations: 1}
		if *c != want {
			t.Fatalf("counts %+v, want %+v", *c, want)
		}
	})
}
