package sqlstore

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// TestDeviceReads: in a request marked store.WithDeviceReads, the device's
// enrollment and record read as they would one by one, except that the one
// asked for second may come from the first's round trip (PostgreSQL); a
// second call reads again. On PostgreSQL, a proxy counts the round trips.
func TestDeviceReads(t *testing.T) {
	type engine struct {
		s     *Store
		sends *atomic.Int64 // nil on SQLite
	}
	engines := map[string]func(t *testing.T) engine{
		"sqlite": func(t *testing.T) engine { return engine{s: openSQLite(t, Options{})} },
	}
	if dsn := os.Getenv("DPS_TEST_PG_DSN"); dsn != "" {
		engines["postgres"] = func(t *testing.T) engine {
			proxied, sends := countingProxy(t, pgSchema(t, dsn))
			s, err := Open(t.Context(), proxied, Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return engine{s, sends}
		}
	}
	enrollment := func(id, hub string) *dps.IndividualEnrollment {
		return &dps.IndividualEnrollment{RegistrationID: id, EnrollmentSettings: dps.EnrollmentSettings{
			IotHubHostName: hub, Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey}}}
	}
	for name, open := range engines {
		t.Run(name, func(t *testing.T) {
			en := open(t)
			s, ctx := en.s, t.Context()
			if _, err := s.PutEnrollment(ctx, enrollment("dev-1", "hub1"), ""); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SaveRegistration(ctx, testRecord("dev-1", "hub1"), "", nil); err != nil {
				t.Fatal(err)
			}
			if _, err := s.PutEnrollment(ctx, enrollment("dev-2", "hub2"), ""); err != nil {
				t.Fatal(err)
			}
			check := func(t *testing.T, ctx context.Context, id, wantEnrollmentHub, wantRecordHub string, enrollmentFirst bool) {
				t.Helper()
				enr := func() {
					e, err := s.Enrollment(ctx, id)
					switch {
					case wantEnrollmentHub == "" && !errors.Is(err, store.ErrNotFound):
						t.Errorf("enrollment %s: %v, %v, want not found", id, e, err)
					case wantEnrollmentHub != "" && (err != nil || e.RegistrationID != id || e.IotHubHostName != wantEnrollmentHub):
						t.Errorf("enrollment %s: %+v, %v, want hub %s", id, e, err, wantEnrollmentHub)
					}
				}
				rec := func() {
					r, err := s.Registration(ctx, id)
					switch {
					case wantRecordHub == "" && !errors.Is(err, store.ErrNotFound):
						t.Errorf("record %s: %v, %v, want not found", id, r, err)
					case wantRecordHub != "" && (err != nil || r.Result.RegistrationID != id || r.Result.AssignedHub != wantRecordHub || r.Result.Etag == ""):
						t.Errorf("record %s: %+v, %v, want hub %s", id, r, err, wantRecordHub)
					}
				}
				if enrollmentFirst {
					enr()
					rec()
				} else {
					rec()
					enr()
				}
			}
			for _, enrollmentFirst := range []bool{true, false} {
				check(t, store.WithDeviceReads(ctx), "dev-1", "hub1", "hub1", enrollmentFirst)
				check(t, store.WithDeviceReads(ctx), "dev-2", "hub2", "", enrollmentFirst)
				check(t, store.WithDeviceReads(ctx), "dev-none", "", "", enrollmentFirst)
			}

			// A second call reads again, and another device reads alone.
			rctx := store.WithDeviceReads(ctx)
			check(t, rctx, "dev-1", "hub1", "hub1", false)
			if _, err := s.PutEnrollment(ctx, enrollment("dev-1", "hub9"), "*"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.SaveRegistration(ctx, testRecord("dev-1", "hub9"), "*", nil); err != nil {
				t.Fatal(err)
			}
			check(t, rctx, "dev-1", "hub9", "hub9", true)
			check(t, rctx, "dev-2", "hub2", "", true)

			if en.sends == nil {
				return
			}
			// Round trips of a request's two reads, the fewest of three
			// tries (a pooled connection idle for a second is pinged).
			trips := func(ctx func() context.Context) int64 {
				least := int64(-1)
				for range 3 {
					c := ctx()
					before := en.sends.Load()
					if _, err := s.Registration(c, "dev-1"); err != nil {
						t.Fatal(err)
					}
					if _, err := s.Enrollment(c, "dev-1"); err != nil {
						t.Fatal(err)
					}
					if n := en.sends.Load() - before; least < 0 || n < least {
						least = n
					}
				}
				return least
			}
			alone := trips(func() context.Context { return ctx })
			together := trips(func() context.Context { return store.WithDeviceReads(ctx) })
			if alone != 2 || together != 1 {
				t.Fatalf("round trips: %d one by one, %d together; want 2 and 1", alone, together)
			}
		})
	}
}
