package storetest

import (
	"context"
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

	t.Run("save registration/concurrent saves end as some order of them would", testConcurrentSaves(open))

	t.Run("save registration/a call whose context is done writes nothing", func(t *testing.T) {
		s := open(t)
		ctx, cancel := context.WithCancel(bg(t))
		cancel()
		if _, err := s.SaveRegistration(ctx, k.make("dev-1", "hub1"), "", newOp("op-1", "dev-1", opBase.Add(time.Hour))); err == nil {
			t.Fatal("save with a canceled context succeeded")
		}
		if err := s.PutOperation(ctx, newOp("op-2", "dev-2", opBase.Add(time.Hour))); err == nil {
			t.Fatal("put operation with a canceled context succeeded")
		}
		_, err := s.Registration(bg(t), "dev-1")
		wantErr(t, err, store.ErrNotFound, "registration")
		for _, id := range []string{"op-1", "op-2"} {
			_, err := s.Operation(bg(t), id)
			wantErr(t, err, store.ErrNotFound, "operation "+id)
		}
	})
}

// testConcurrentSaves starts saves of several kinds at once, so that a
// store which runs them together (in one transaction) runs them together,
// and checks that each answer is one some order of the calls allows, and
// that the stored records and operations agree with the answers.
func testConcurrentSaves(open func(*testing.T) store.Store) func(t *testing.T) {
	return func(t *testing.T) {
		s := open(t)
		k := registrationKind()
		existing := map[string]*store.Registration{}
		for _, id := range []string{"upd", "over", "stale"} {
			r, err := s.SaveRegistration(bg(t), k.make(id, "hub0"), "", nil)
			must(t, err, "save "+id)
			existing[id] = r
		}
		type call struct {
			id, ifMatch string
			out         *store.Registration
			err         error
		}
		var calls []*call
		add := func(n int, id, ifMatch string) {
			for range n {
				calls = append(calls, &call{id: id, ifMatch: ifMatch})
			}
		}
		add(6, "dup", "")                          // one creates, the others find it
		add(6, "upd", existing["upd"].Result.Etag) // one updates, the others find a new etag
		add(4, "over", "*")                        // each overwrites
		add(2, "stale", k.otherQuoting(existing["stale"].Result.Etag)+"x")
		for i := range 10 {
			add(1, fmt.Sprintf("fresh-%d", i), "")
		}
		testutil.Together(len(calls), func(i int) {
			c := calls[i]
			c.out, c.err = s.SaveRegistration(bg(t), k.make(c.id, fmt.Sprintf("hub-%d", i)), c.ifMatch, newOp(fmt.Sprintf("op-%d", i), c.id, opBase.Add(time.Hour)))
		})

		wins := map[string][]int{}
		for i, c := range calls {
			switch {
			case c.err == nil:
				wins[c.id] = append(wins[c.id], i)
				// The operation holds what the call returned.
				op, err := s.Operation(bg(t), fmt.Sprintf("op-%d", i))
				must(t, err, fmt.Sprintf("operation of call %d", i))
				if op.Result == nil || op.Result.Etag != c.out.Result.Etag || op.Result.AssignedHub != fmt.Sprintf("hub-%d", i) {
					t.Fatalf("call %d returned etag %s; its operation holds %+v", i, c.out.Result.Etag, op.Result)
				}
			case c.id == "dup" && errors.Is(c.err, store.ErrConflict),
				c.id == "upd" && errors.Is(c.err, store.ErrPreconditionFailed),
				c.id == "stale" && errors.Is(c.err, store.ErrPreconditionFailed):
				_, err := s.Operation(bg(t), fmt.Sprintf("op-%d", i))
				wantErr(t, err, store.ErrNotFound, fmt.Sprintf("operation of failed call %d", i))
			default:
				t.Fatalf("call %d (%s, If-Match %q): %v", i, c.id, c.ifMatch, c.err)
			}
		}
		for id, want := range map[string]int{"dup": 1, "upd": 1, "over": 4, "stale": 0} {
			if len(wins[id]) != want {
				t.Fatalf("%s: %d calls succeeded, want %d", id, len(wins[id]), want)
			}
		}
		for i := range 10 {
			if id := fmt.Sprintf("fresh-%d", i); len(wins[id]) != 1 {
				t.Fatalf("%s was not saved", id)
			}
		}

		// The stored record is the answer of the last call to win: for the
		// overwrites, one of them, with the creation time of the first.
		for id, won := range wins {
			got, err := s.Registration(bg(t), id)
			must(t, err, "registration "+id)
			last := -1
			for _, i := range won {
				if calls[i].out.Result.Etag == got.Result.Etag {
					last = i
				}
			}
			if last < 0 {
				t.Fatalf("%s: stored etag %s is none of the %d answers", id, got.Result.Etag, len(won))
			}
			sameJSON(t, id, got, calls[last].out)
		}
		etags := map[string]bool{}
		for _, i := range wins["over"] {
			r := calls[i].out.Result
			if etags[r.Etag] {
				t.Fatalf("two overwrites answered etag %s", r.Etag)
			}
			etags[r.Etag] = true
			if !tm(r.CreatedDateTimeUtc).Equal(tm(existing["over"].Result.CreatedDateTimeUtc)) {
				t.Fatalf("an overwrite answered created %v, want the record's %v", r.CreatedDateTimeUtc, existing["over"].Result.CreatedDateTimeUtc)
			}
		}
		k.mustGet(t, s, "stale", "hub0")
	}
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
		_, err = s.SaveRegistration(bg(t), registrationKind().make("dev-1", "x"), "", newOp("op-1", "dev-1", opBase))
		wantErr(t, err, store.ErrUnavailable, "save registration after close")
		wantErr(t, s.PutOperation(bg(t), newOp("op-2", "dev-1", opBase)), store.ErrUnavailable, "put operation after close")
	})
}
