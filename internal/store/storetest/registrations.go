package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// Operation times in these tests are whole seconds: the contract does not
// promise a finer resolution.
var opBase = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func newOp(id, regID string, expires time.Time) *store.Operation {
	return &store.Operation{ID: id, RegistrationID: regID, Status: dps.StatusAssigned, CreatedAt: opBase, ExpiresAt: expires}
}

func testSaveRegistration(t *testing.T, open func(*testing.T) store.Store) {
	k := registrationKind()

	t.Run("operation carries the stored record", func(t *testing.T) {
		s := open(t)
		r := k.make("Dev-1", "hub1.azure-devices.net")
		r.EnrollmentGroupID = "Group-1"
		out, err := s.SaveRegistration(bg(t), r, "", newOp("op-1", "Dev-1", opBase.Add(time.Hour)))
		must(t, err, "save")
		if out.EnrollmentGroupID != "Group-1" || out.Result.AssignedHub != "hub1.azure-devices.net" {
			t.Fatalf("save returned %+v", out)
		}
		op, err := s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if op.ID != "op-1" || op.RegistrationID != "Dev-1" || op.Status != dps.StatusAssigned ||
			!op.CreatedAt.Equal(opBase) || !op.ExpiresAt.Equal(opBase.Add(time.Hour)) {
			t.Fatalf("operation %+v does not round-trip", op)
		}
		if op.Result == nil {
			t.Fatal("operation has no result")
		}
		sameJSON(t, "operation result", op.Result, out.Result)
		got, err := s.Registration(bg(t), "dev-1")
		must(t, err, "registration")
		sameJSON(t, "registration", got, out)

		// The next save's operation carries the new etag and the kept created.
		out2, err := s.SaveRegistration(bg(t), k.make("dev-1", "hub2.azure-devices.net"), out.Result.Etag, newOp("op-2", "dev-1", opBase.Add(time.Hour)))
		must(t, err, "second save")
		op2, err := s.Operation(bg(t), "op-2")
		must(t, err, "operation")
		sameJSON(t, "second operation result", op2.Result, out2.Result)
		if op2.Result.Etag == op.Result.Etag || !tm(op2.Result.CreatedDateTimeUtc).Equal(tm(op.Result.CreatedDateTimeUtc)) {
			t.Fatalf("second operation: etag %q created %v; first: %q %v", op2.Result.Etag, op2.Result.CreatedDateTimeUtc,
				op.Result.Etag, op.Result.CreatedDateTimeUtc)
		}
		// The first operation still shows the first result.
		op, err = s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if op.Result.AssignedHub != "hub1.azure-devices.net" {
			t.Fatalf("first operation changed: %+v", op.Result)
		}
	})

	t.Run("failed save stores no operation", func(t *testing.T) {
		s := open(t)
		out, err := s.SaveRegistration(bg(t), k.make("dev-1", "hub1"), "", nil)
		must(t, err, "save")
		_, err = s.SaveRegistration(bg(t), k.make("dev-1", "hub2"), "", newOp("op-conflict", "dev-1", opBase))
		wantErr(t, err, store.ErrConflict, "create-only save")
		_, err = s.SaveRegistration(bg(t), k.make("dev-1", "hub2"), k.otherQuoting(out.Result.Etag)+"x", newOp("op-stale", "dev-1", opBase))
		wantErr(t, err, store.ErrPreconditionFailed, "save with stale etag")
		for _, id := range []string{"op-conflict", "op-stale"} {
			_, err := s.Operation(bg(t), id)
			wantErr(t, err, store.ErrNotFound, "operation "+id)
		}
		k.mustGet(t, s, "dev-1", "hub1")
	})

	t.Run("created comes from the existing record, not the caller", func(t *testing.T) {
		s := open(t)
		bogus := dps.NewTime(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC))
		r := k.make("dev-1", "hub1")
		r.Result.CreatedDateTimeUtc, r.Result.LastUpdatedDateTimeUtc, r.Result.Etag = bogus, bogus, "bogus"
		v1, err := s.SaveRegistration(bg(t), r, "", nil)
		must(t, err, "save")
		if tm(v1.Result.CreatedDateTimeUtc).Equal(bogus.Time) || v1.Result.Etag == "bogus" {
			t.Fatalf("the store kept the caller's created %v / etag %q", v1.Result.CreatedDateTimeUtc, v1.Result.Etag)
		}
		r.Result.AssignedHub = "hub2"
		v2, err := s.SaveRegistration(bg(t), r, v1.Result.Etag, nil)
		must(t, err, "second save")
		if !tm(v2.Result.CreatedDateTimeUtc).Equal(tm(v1.Result.CreatedDateTimeUtc)) {
			t.Fatalf("created %v, want the first record's %v", v2.Result.CreatedDateTimeUtc, v1.Result.CreatedDateTimeUtc)
		}
	})

	t.Run("device payload round-trips", func(t *testing.T) {
		s := open(t)
		r := k.make("dev-1", "hub1")
		r.DevicePayload = json.RawMessage(`{"modelId":"dtmi:example:thermostat;1","n":[1,2]}`)
		out, err := s.SaveRegistration(bg(t), r, "", nil)
		must(t, err, "save")
		r.DevicePayload[2] = 'X' // the store must have copied it
		for _, got := range []*store.Registration{out, k.mustGet(t, s, "dev-1", "hub1")} {
			if string(got.DevicePayload) != `{"modelId":"dtmi:example:thermostat;1","n":[1,2]}` {
				t.Fatalf("payload %s does not round-trip", got.DevicePayload)
			}
		}
		// A later registration without a payload clears it.
		_, err = s.SaveRegistration(bg(t), k.make("dev-1", "hub2"), out.Result.Etag, nil)
		must(t, err, "second save")
		if got := k.mustGet(t, s, "dev-1", "hub2"); got.DevicePayload != nil {
			t.Fatalf("payload %s after a save without one, want nil", got.DevicePayload)
		}
	})

	t.Run("a record moves between groups", func(t *testing.T) {
		s := open(t)
		r := k.make("dev-1", "hub1")
		r.EnrollmentGroupID = "g1"
		v1, err := s.SaveRegistration(bg(t), r, "", nil)
		must(t, err, "save")
		r.EnrollmentGroupID = "g2"
		_, err = s.SaveRegistration(bg(t), r, v1.Result.Etag, nil)
		must(t, err, "save")
		p, err := s.RegistrationsByGroup(bg(t), "g1", "", 10)
		must(t, err, "list g1")
		if len(p.Items) != 0 {
			t.Fatalf("g1 still lists %d records", len(p.Items))
		}
		p, err = s.RegistrationsByGroup(bg(t), "G2", "", 10)
		must(t, err, "list g2")
		if len(p.Items) != 1 || p.Items[0].EnrollmentGroupID != "g2" || p.Next != "" {
			t.Fatalf("g2 lists %+v", p)
		}
		must(t, s.DeleteRegistration(bg(t), "DEV-1", ""), "delete")
		p, err = s.RegistrationsByGroup(bg(t), "g2", "", 10)
		must(t, err, "list g2")
		if len(p.Items) != 0 {
			t.Fatalf("g2 lists a deleted record")
		}
	})
}

func testOperations(t *testing.T, open func(*testing.T) store.Store) {
	t.Run("get/missing is not found", func(t *testing.T) {
		s := open(t)
		_, err := s.Operation(bg(t), "nope")
		wantErr(t, err, store.ErrNotFound, "operation")
	})

	t.Run("put/inserts and replaces", func(t *testing.T) {
		s := open(t)
		op := newOp("op-1", "Dev-1", opBase.Add(time.Hour))
		op.Status = dps.StatusAssigning
		must(t, s.PutOperation(bg(t), op), "put")
		got, err := s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if got.Status != dps.StatusAssigning || got.Result != nil || got.RegistrationID != "Dev-1" ||
			!got.CreatedAt.Equal(opBase) || !got.ExpiresAt.Equal(opBase.Add(time.Hour)) {
			t.Fatalf("operation %+v does not round-trip", got)
		}

		op.Status = dps.StatusFailed
		op.Result = &dps.DeviceRegistrationResult{RegistrationID: "Dev-1", Status: dps.StatusFailed, ErrorCode: 401002, ErrorMessage: "nope"}
		op.ExpiresAt = opBase.Add(2 * time.Hour)
		must(t, s.PutOperation(bg(t), op), "replace")
		got, err = s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if got.Status != dps.StatusFailed || got.Result == nil || got.Result.ErrorCode != 401002 || !got.ExpiresAt.Equal(opBase.Add(2*time.Hour)) {
			t.Fatalf("operation %+v was not replaced", got)
		}
		got.Result.ErrorCode = 1 // callers may mutate what they get
		got, err = s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if got.Result.ErrorCode != 401002 {
			t.Fatal("mutating a returned operation changed the store")
		}
	})

	t.Run("delete before removes expired operations only", func(t *testing.T) {
		s := open(t)
		for i, exp := range []time.Duration{-2 * time.Hour, -time.Minute, -time.Second, time.Second, time.Hour} {
			must(t, s.PutOperation(bg(t), newOp(fmt.Sprintf("op-%d", i), "dev", opBase.Add(exp))), "put")
		}
		n, err := s.DeleteOperationsBefore(bg(t), opBase)
		must(t, err, "delete")
		if n != 3 {
			t.Fatalf("deleted %d operations, want 3", n)
		}
		for i := range 5 {
			_, err := s.Operation(bg(t), fmt.Sprintf("op-%d", i))
			if i < 3 {
				wantErr(t, err, store.ErrNotFound, fmt.Sprintf("op-%d", i))
			} else {
				must(t, err, fmt.Sprintf("op-%d", i))
			}
		}
		n, err = s.DeleteOperationsBefore(bg(t), opBase)
		must(t, err, "delete again")
		if n != 0 {
			t.Fatalf("second delete removed %d operations", n)
		}
	})

	t.Run("delete before handles many operations", func(t *testing.T) {
		s := open(t)
		const n = 2500 // more than one batch, if the store batches
		for i := range n {
			must(t, s.PutOperation(bg(t), newOp(fmt.Sprintf("op-%04d", i), "dev", opBase.Add(-time.Duration(i+1)*time.Second))), "put")
		}
		must(t, s.PutOperation(bg(t), newOp("op-live", "dev", opBase.Add(time.Hour))), "put")
		got, err := s.DeleteOperationsBefore(bg(t), opBase)
		must(t, err, "delete")
		if got != n {
			t.Fatalf("deleted %d operations, want %d", got, n)
		}
		_, err = s.Operation(bg(t), "op-live")
		must(t, err, "operation op-live")
	})
}

// testConcurrency checks that of several registrations of one device that
// race with the same ifMatch, exactly one wins.
func testConcurrency(t *testing.T, open func(*testing.T) store.Store) {
	const n = 12
	k := registrationKind()
	race := func(t *testing.T, s store.Store, ifMatch, round string) (winner *store.Registration) {
		t.Helper()
		outs := make([]*store.Registration, n)
		errs := make([]error, n)
		testutil.Together(n, func(i int) {
			r := k.make("Racer", fmt.Sprintf("hub-%d", i))
			outs[i], errs[i] = s.SaveRegistration(bg(t), r, ifMatch, newOp(fmt.Sprintf("%s-op-%d", round, i), "Racer", opBase.Add(time.Hour)))
		})
		wins := 0
		win := -1
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
				win = i
			case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrPreconditionFailed):
			default:
				t.Fatalf("racer %d: unexpected error %v", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d of %d racers won, want exactly 1", wins, n)
		}
		k.mustGet(t, s, "racer", fmt.Sprintf("hub-%d", win))
		for i := range n {
			_, err := s.Operation(bg(t), fmt.Sprintf("%s-op-%d", round, i))
			if i == win {
				must(t, err, "winner's operation")
			} else {
				wantErr(t, err, store.ErrNotFound, "loser's operation")
			}
		}
		return outs[win]
	}

	t.Run("save registration/exactly one of racing saves wins", func(t *testing.T) {
		s := open(t)
		first := race(t, s, "", "create")
		second := race(t, s, first.Result.Etag, "update")
		if second.Result.Etag == first.Result.Etag {
			t.Fatal("the update kept the etag")
		}
		race(t, s, second.Result.Etag, "again")
	})
}

func testClose(t *testing.T, open func(*testing.T) store.Store) {
	t.Run("ping/answers while open", func(t *testing.T) {
		s := open(t)
		must(t, s.Ping(bg(t)), "ping")
	})
	t.Run("calls after close are unavailable", func(t *testing.T) {
		s := open(t)
		must(t, s.Close(), "close")
		wantErr(t, s.Ping(bg(t)), store.ErrUnavailable, "ping after close")
		_, err := s.Enrollment(bg(t), "dev-1")
		wantErr(t, err, store.ErrUnavailable, "get after close")
		_, err = s.PutEnrollment(bg(t), enrollmentKind().make("dev-1", "x"), "")
		wantErr(t, err, store.ErrUnavailable, "put after close")
	})
}
