package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// testConfigVersion: ConfigVersion changes with every write of the
// instance, a linked hub, a CA certificate or an enrollment group, and with
// no other write; a write that fails leaves it.
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
	refused := func(name string, write func() error) {
		t.Helper()
		before := version()
		if err := write(); !errors.Is(err, store.ErrPreconditionFailed) {
			t.Fatalf("%s: %v, want a failed precondition", name, err)
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
	refused("put group under a stale etag", func() error { return ignore(s.PutGroup(bg(t), gk.make("g1", "b"), stale)) })
	step("put CA", true, func() error { return ignore(s.PutCACertificate(bg(t), ck.make("ca1", "a"), "")) })
	refused("put CA under a stale etag", func() error { return ignore(s.PutCACertificate(bg(t), ck.make("ca1", "b"), stale)) })
	step("put hub", true, func() error { return ignore(s.PutLinkedHub(bg(t), hk.make("hub1.example.net", "a"), "")) })
	refused("delete hub under a stale etag", func() error { return s.DeleteLinkedHub(bg(t), "hub1.example.net", stale) })
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
	step("delete group", true, func() error { return s.DeleteGroup(bg(t), "g1", "") })
	step("delete CA", true, func() error { return s.DeleteCACertificate(bg(t), "ca1", "") })
	step("delete hub", true, func() error { return s.DeleteLinkedHub(bg(t), "hub1.example.net", "") })

	// Everything else.
	ek, pk, rk := enrollmentKind(), policyKind(), registrationKind()
	step("put enrollment", false, func() error { return ignore(s.PutEnrollment(bg(t), ek.make("dev-1", "a"), "")) })
	step("delete enrollment", false, func() error { return s.DeleteEnrollment(bg(t), "dev-1", "") })
	step("put policy", false, func() error { return ignore(s.PutPolicy(bg(t), pk.make("p1", "a"), "")) })
	step("save registration", false, func() error {
		return ignore(s.SaveRegistration(bg(t), rk.make("dev-2", "hub2.example.net"), "", newOp("op-1", "dev-2", time.Now().Add(time.Hour))))
	})
	step("put operation", false, func() error { return s.PutOperation(bg(t), newOp("op-2", "dev-2", time.Now().Add(time.Hour))) })
	step("restore enrollments and registrations", false, func() error {
		return s.Restore(bg(t), []store.Record{{Enrollment: ek.make("dev-3", "a")}, {Registration: rk.make("dev-3", "hub2.example.net")}})
	})
	step("add refusals", false, func() error {
		return s.AddRefusals(bg(t), []*store.Refusal{{RegistrationID: "dev-4", Reason: "no", Status: 401, ErrorCode: 401002}})
	})
	step("put run-time setting", false, func() error {
		return ignore(s.PutRuntimeSetting(bg(t), &store.RuntimeSetting{Name: "faults", Doc: "{}"}, "*"))
	})
}
