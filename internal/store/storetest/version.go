package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

var errRolledBack = errors.New("rolled back")

// testConfigVersion: ConfigVersion changes with every write of the
// instance, a linked hub, a CA certificate or an enrollment group, and with
// no other write; a write that fails, or a RestoreAll that rolls back,
// leaves it. (That registrations leave it is what lets a cache of those
// records live longer than one registration.)
func testConfigVersion(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	s := open(t)
	version := func() int64 {
		t.Helper()
		v, err := s.ConfigVersion(bg(t))
		must(t, err, "config version")
		return v
	}
	step := func(name string, changes bool, write func() error) {
		t.Helper()
		before := version()
		if err := write(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if after := version(); (after != before) != changes {
			t.Errorf("%s: version %d -> %d; want a change: %v", name, before, after, changes)
		}
	}
	refused := func(name string, want error, write func() error) {
		t.Helper()
		before := version()
		if err := write(); !errors.Is(err, want) {
			t.Fatalf("%s: %v, want %v", name, err, want)
		}
		if after := version(); after != before {
			t.Errorf("%s: refused, yet the version changed %d -> %d", name, before, after)
		}
	}
	ignore := func(_ any, err error) error { return err }
	const stale = `"stale"`
	in := newInstance("0ne000000C1")
	gk, ck, hk := groupKind(), caKind(certs), hubKind()

	// What decisions read.
	step("init instance", true, func() error { return ignore(s.InitInstance(bg(t), in)) })
	step("update instance", true, func() error {
		u := *in
		u.AllocationPolicy = dps.AllocationStatic
		return s.UpdateInstance(bg(t), &u)
	})
	step("restore instance", true, func() error { return s.RestoreInstance(bg(t), in) })
	step("put group", true, func() error { return ignore(s.PutGroup(bg(t), gk.make("g1", "a"), "")) })
	refused("put group under a stale etag", store.ErrPreconditionFailed, func() error { return ignore(s.PutGroup(bg(t), gk.make("g1", "b"), stale)) })
	step("put CA", true, func() error { return ignore(s.PutCACertificate(bg(t), ck.make("ca1", "a"), "")) })
	refused("put CA under a stale etag", store.ErrPreconditionFailed, func() error { return ignore(s.PutCACertificate(bg(t), ck.make("ca1", "b"), stale)) })
	step("put hub", true, func() error { return ignore(s.PutLinkedHub(bg(t), hk.make("hub1.example.net", "a"), "")) })
	refused("delete hub under a stale etag", store.ErrPreconditionFailed, func() error { return s.DeleteLinkedHub(bg(t), "hub1.example.net", stale) })
	step("restore a group", true, func() error { return s.Restore(bg(t), []store.Record{{Group: gk.make("g2", "a")}}) })
	step("restore a CA", true, func() error { return s.Restore(bg(t), []store.Record{{CACertificate: ck.make("ca2", "a")}}) })
	step("restore a hub", true, func() error {
		return s.Restore(bg(t), []store.Record{{LinkedHub: hk.make("hub2.example.net", "a")}})
	})
	step("restore all: a group", true, func() error {
		return s.RestoreAll(bg(t), func(r store.Restorer) error {
			return r.Restore(bg(t), []store.Record{{Group: gk.make("g3", "a")}})
		})
	})
	step("restore all: the instance, a CA and a hub", true, func() error {
		return s.RestoreAll(bg(t), func(r store.Restorer) error {
			if err := r.RestoreInstance(bg(t), in); err != nil {
				return err
			}
			return r.Restore(bg(t), []store.Record{{CACertificate: ck.make("ca3", "a")}, {LinkedHub: hk.make("hub3.example.net", "a")}})
		})
	})
	refused("restore all that fails", errRolledBack, func() error {
		return s.RestoreAll(bg(t), func(r store.Restorer) error {
			if err := r.Restore(bg(t), []store.Record{{Group: gk.make("g4", "a")}}); err != nil {
				return err
			}
			return errRolledBack
		})
	})
	step("delete group", true, func() error { return s.DeleteGroup(bg(t), "g1", "") })
	refused("delete a missing group", store.ErrNotFound, func() error { return s.DeleteGroup(bg(t), "g1", "") })
	step("delete CA", true, func() error { return s.DeleteCACertificate(bg(t), "ca1", "") })
	refused("delete a missing CA", store.ErrNotFound, func() error { return s.DeleteCACertificate(bg(t), "ca1", "") })
	step("delete hub", true, func() error { return s.DeleteLinkedHub(bg(t), "hub1.example.net", "") })
	refused("delete a missing hub", store.ErrNotFound, func() error { return s.DeleteLinkedHub(bg(t), "hub1.example.net", "") })

	// Everything else.
	ek, pk, rk := enrollmentKind(), policyKind(), registrationKind()
	step("put enrollment", false, func() error { return ignore(s.PutEnrollment(bg(t), ek.make("dev-1", "a"), "")) })
	step("delete enrollment", false, func() error { return s.DeleteEnrollment(bg(t), "dev-1", "") })
	step("put policy", false, func() error { return ignore(s.PutPolicy(bg(t), pk.make("p1", "a"), "")) })
	step("save registration", false, func() error {
		return ignore(s.SaveRegistration(bg(t), rk.make("dev-2", "hub2.example.net"), "", newOp("op-1", "dev-2", time.Now().Add(time.Hour))))
	})
	step("put operation", false, func() error { return s.PutOperation(bg(t), newOp("op-2", "dev-2", time.Now().Add(time.Hour))) })
	step("put a job", false, func() error { return s.PutOperation(bg(t), jobOp("op-3", opBase.Add(time.Minute))) })
	step("claim a job", false, func() error {
		return ignore(s.ClaimOperation(bg(t), "op-3", opBase.Add(2*time.Minute), opBase.Add(3*time.Minute)))
	})
	step("delete expired operations", false, func() error { return ignore(s.DeleteOperationsBefore(bg(t), time.Now().Add(2*time.Hour))) })
	step("delete registration", false, func() error { return s.DeleteRegistration(bg(t), "dev-2", "") })
	step("delete policy", false, func() error { return s.DeletePolicy(bg(t), "p1", "") })
	step("restore enrollments and registrations", false, func() error {
		return s.Restore(bg(t), []store.Record{{Enrollment: ek.make("dev-3", "a")}, {Registration: rk.make("dev-3", "hub2.example.net")}})
	})
	step("add refusals", false, func() error {
		return s.AddRefusals(bg(t), []*store.Refusal{{RegistrationID: "dev-4", Reason: "no", Status: 401, ErrorCode: 401002}})
	})
	step("trim refusals", false, func() error { return ignore(s.TrimRefusals(bg(t), 0, time.Now().Add(time.Hour))) })
	step("put run-time setting", false, func() error {
		return ignore(s.PutRuntimeSetting(bg(t), &store.RuntimeSetting{Name: "faults", Doc: "{}"}, "*"))
	})
	step("delete run-time setting", false, func() error { return s.DeleteRuntimeSetting(bg(t), "faults", "") })
}
