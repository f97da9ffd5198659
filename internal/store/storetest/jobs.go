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

// The fields of the assignment that reaches the hub: a linked hub's device
// registry, a record's placement and applied twin, an operation's job and
// lease.

func testHubRoundTrip(t *testing.T, open func(*testing.T) store.Store) {
	s := open(t)
	roundTrip(t, s, hubKind(), &store.LinkedHub{Name: "Broker.Example:8883", AllocationWeight: 7, Location: "westeurope",
		DeviceRegistry: "webhook", RegistryWebhookURL: "https://registry.example/dpsd?code=k", RegistryWebhookSecret: "sixteen-chars-or-more"})
}

func placedRecord(id string) *store.Registration {
	r := registrationKind().make(id, "hub-b.example")
	r.Placement = store.Placement{Hub: "hub-a.example:9443", DeviceID: "Device-" + id}
	r.AppliedTwin = &dps.InitialTwin{Tags: json.RawMessage(`{"site":"north","n":[1,{"k":null}]}`),
		Properties: &dps.InitialTwinProperties{Desired: json.RawMessage(`{"interval":30}`)}}
	return r
}

func testRegistrationPlacement(t *testing.T, open func(*testing.T) store.Store) {
	k := registrationKind()

	t.Run("placement and applied twin round-trip", func(t *testing.T) {
		s := open(t)
		roundTrip(t, s, k, placedRecord("Dev-1"))
	})

	t.Run("a save without them clears them", func(t *testing.T) {
		s := open(t)
		v1, err := s.SaveRegistration(bg(t), placedRecord("dev-1"), "", nil)
		must(t, err, "save")
		v1.AppliedTwin.Properties.Desired[0] = 'X' // the store must have copied it
		got := k.mustGet(t, s, "dev-1", "hub-b.example")
		if got.AppliedTwin == nil || string(got.AppliedTwin.Properties.Desired) != `{"interval":30}` {
			t.Fatalf("applied twin %+v, want it as saved", got.AppliedTwin)
		}
		_, err = s.SaveRegistration(bg(t), k.make("dev-1", "hub-c.example"), v1.Result.Etag, nil)
		must(t, err, "second save")
		got = k.mustGet(t, s, "dev-1", "hub-c.example")
		if !got.Placement.IsZero() || got.AppliedTwin != nil {
			t.Fatalf("placement %+v, applied twin %+v after a save without them; want neither", got.Placement, got.AppliedTwin)
		}
	})

	t.Run("restore keeps them", func(t *testing.T) {
		s := open(t)
		r := placedRecord("dev-1")
		must(t, s.Restore(bg(t), []store.Record{{Registration: r}}), "restore")
		got := k.mustGet(t, s, "dev-1", "hub-b.example")
		sameJSON(t, "placement", got.Placement, r.Placement)
		sameJSON(t, "applied twin", got.AppliedTwin, r.AppliedTwin)
	})
}

// jobOp is an assigning operation with a job and a lease.
func jobOp(id string, lease time.Time) *store.Operation {
	op := newOp(id, "Dev-1", opBase.Add(24*time.Hour))
	op.Status = dps.StatusAssigning
	op.Job = json.RawMessage(`{"registrationId":"Dev-1","n":` + fmt.Sprint(lease.Unix()) + `}`)
	op.LeaseUntil = lease
	return op
}

func testJobs(t *testing.T, open func(*testing.T) store.Store) {
	t.Run("job and lease round-trip", func(t *testing.T) {
		s := open(t)
		op := jobOp("op-1", opBase.Add(time.Minute))
		must(t, s.PutOperation(bg(t), op), "put")
		got, err := s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if string(got.Job) != string(op.Job) || !got.LeaseUntil.Equal(op.LeaseUntil) || got.Status != dps.StatusAssigning || got.Result != nil {
			t.Fatalf("operation %+v (job %s), want it as put", got, got.Job)
		}
		if plain := newOp("op-2", "dev", opBase); true {
			must(t, s.PutOperation(bg(t), plain), "put")
			got, err := s.Operation(bg(t), "op-2")
			must(t, err, "operation")
			if got.Job != nil || !got.LeaseUntil.IsZero() {
				t.Fatalf("an operation put without a job has job %s, lease %v", got.Job, got.LeaseUntil)
			}
		}
	})

	t.Run("a job that is not JSON is refused", func(t *testing.T) {
		s := open(t)
		op := jobOp("op-1", opBase)
		op.Job = json.RawMessage(`{"broken"`)
		if err := s.PutOperation(bg(t), op); err == nil {
			t.Fatal("put an operation whose job is not JSON")
		}
	})

	t.Run("save registration ends the job", func(t *testing.T) {
		s := open(t)
		must(t, s.PutOperation(bg(t), jobOp("op-1", opBase.Add(time.Minute))), "put")
		final := newOp("op-1", "Dev-1", opBase.Add(24*time.Hour)) // no job: terminal
		_, err := s.SaveRegistration(bg(t), registrationKind().make("Dev-1", "hub1"), "", final)
		must(t, err, "save")
		got, err := s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if got.Job != nil || got.Status != dps.StatusAssigned || got.Result == nil {
			t.Fatalf("after the save: status %q, job %s, result %v; want assigned, no job, the record", got.Status, got.Job, got.Result)
		}
		_, err = s.ClaimOperation(bg(t), "op-1", opBase.Add(time.Hour), opBase.Add(2*time.Hour))
		wantErr(t, err, store.ErrPreconditionFailed, "claim of a terminal operation")
	})

	t.Run("claim", func(t *testing.T) {
		s := open(t)
		lease := opBase.Add(time.Minute)
		must(t, s.PutOperation(bg(t), jobOp("op-1", lease)), "put")
		for _, c := range []struct {
			name string
			id   string
			now  time.Time
			want error
		}{
			{"missing operation", "op-none", lease.Add(time.Second), store.ErrNotFound},
			{"lease not expired", "op-1", lease.Add(-time.Second), store.ErrPreconditionFailed},
			{"lease expires at now", "op-1", lease, store.ErrPreconditionFailed},
		} {
			_, err := s.ClaimOperation(bg(t), c.id, c.now, c.now.Add(time.Minute))
			wantErr(t, err, c.want, c.name)
		}
		now := lease.Add(time.Second)
		got, err := s.ClaimOperation(bg(t), "op-1", now, now.Add(time.Minute))
		must(t, err, "claim of an expired lease")
		if !got.LeaseUntil.Equal(now.Add(time.Minute)) || string(got.Job) != string(jobOp("op-1", lease).Job) || got.RegistrationID != "Dev-1" {
			t.Fatalf("claimed %+v (job %s), want the operation with the new lease", got, got.Job)
		}
		_, err = s.ClaimOperation(bg(t), "op-1", now, now.Add(2*time.Minute))
		wantErr(t, err, store.ErrPreconditionFailed, "second claim within the new lease")
		stored, err := s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		if !stored.LeaseUntil.Equal(now.Add(time.Minute)) {
			t.Fatalf("lease %v after a refused claim, want %v", stored.LeaseUntil, now.Add(time.Minute))
		}
	})

	t.Run("exactly one of racing claims wins", func(t *testing.T) {
		s := open(t)
		must(t, s.PutOperation(bg(t), jobOp("op-1", opBase)), "put")
		const n = 12
		errs := make([]error, n)
		now := opBase.Add(time.Second)
		testutil.Together(n, func(i int) {
			_, errs[i] = s.ClaimOperation(bg(t), "op-1", now, now.Add(time.Duration(i+1)*time.Minute))
		})
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrPreconditionFailed):
			default:
				t.Fatalf("claimer %d: unexpected error %v", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d of %d claimers won, want exactly 1", wins, n)
		}
	})

	t.Run("expired jobs lists expired leases only, oldest first", func(t *testing.T) {
		s := open(t)
		for i, d := range []time.Duration{-time.Minute, time.Minute, -time.Hour, -time.Second} {
			must(t, s.PutOperation(bg(t), jobOp(fmt.Sprintf("op-%d", i), opBase.Add(d))), "put")
		}
		must(t, s.PutOperation(bg(t), newOp("op-terminal", "dev", opBase.Add(-time.Hour))), "put") // no job
		got, err := s.ExpiredJobs(bg(t), opBase, 10)
		must(t, err, "expired jobs")
		var ids []string
		for _, op := range got {
			ids = append(ids, op.ID)
			if op.Job == nil {
				t.Errorf("%s listed without its job", op.ID)
			}
		}
		if fmt.Sprint(ids) != "[op-2 op-0 op-3]" {
			t.Fatalf("expired jobs %v, want [op-2 op-0 op-3]", ids)
		}
		got, err = s.ExpiredJobs(bg(t), opBase, 2)
		must(t, err, "expired jobs")
		if len(got) != 2 || got[0].ID != "op-2" {
			t.Fatalf("limit 2: %d operations, first %v", len(got), got)
		}
	})
}
