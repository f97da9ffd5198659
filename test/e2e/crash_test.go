package e2e_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the SQLite integrity check

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/server"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestCrashUnderLoad registers devices as fast as a few dozen workers can
// — new devices, and some again — until the store has committed several
// registrations in one transaction (group commit), kills dpsd with SIGKILL
// at a random moment after that, and restarts it on the same data. Every
// registration whose answer said "assigned" must be there as it was
// answered (same etag, same hub), no operation may be left "assigning", and
// the database must check clean: SQLite's integrity check, and an export
// that reads every record back. On SQLite and on PostgreSQL.
func TestCrashUnderLoad(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			var args []string
			dsn := ""
			if engine == "postgres" {
				dsn = mnDatabase(t)
				// A pool of 4 connections has one committer, whose
				// batches grow at a load this test can make; the test
				// server of scripts/pg-throwaway.sh commits too fast
				// for the default four to be busy at once.
				args = []string{"--store", dsn, "--store-max-conns", "4"}
			}
			s := e2e.StartServer(t, args...)
			mnLinkHub(t, s)
			key := mnGroup(t, s, "fleet")
			acks := crashLoad(t, s, key)
			if len(acks) == 0 {
				t.Fatal("no registration was acknowledged before the kill")
			}
			t.Logf("%s: %d devices acknowledged before SIGKILL", engine, len(acks))

			s = e2e.StartServerIn(t, s.Dir, args...)
			records := crashExport(t, s)
			for id, want := range acks {
				got, ok := records[id]
				switch {
				case !ok:
					t.Errorf("%s was answered assigned (etag %s) but has no record after the restart", id, want.etag)
				case got.Etag != want.etag || got.AssignedHub != want.hub || got.Status != dps.StatusAssigned:
					t.Errorf("%s: record etag %s hub %s status %s; the device was told etag %s hub %s", id, got.Etag, got.AssignedHub, got.Status, want.etag, want.hub)
				}
			}
			var db *sql.DB
			if engine == "postgres" {
				db = mnDB(t, dsn)
			} else {
				var err error
				db, err = sql.Open("sqlite", "file:"+filepath.Join(s.Dir, server.DBFile)+"?mode=ro")
				if err != nil {
					t.Fatal(err)
				}
				defer db.Close()
				var ok string
				if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
					t.Errorf("SQLite integrity check: %q, %v", ok, err)
				}
				if n := mnCount(t, db, `SELECT COUNT(*) FROM pragma_foreign_key_check`); n != 0 {
					t.Errorf("SQLite foreign key check: %d rows", n)
				}
			}
			if n := mnCount(t, db, `SELECT COUNT(*) FROM operations WHERE status = $1`, dps.StatusAssigning); n != 0 {
				t.Errorf("%d operations are left assigning", n)
			}
			// The restarted server serves.
			if a := mnNewDevice(t, s, "after-restart", sas.DeriveDeviceKey(key, "after-restart")).register(t, s.DeviceEndpoint); a.status != http.StatusAccepted || a.str("status") != dps.StatusAssigned {
				t.Fatalf("a registration after the restart: %d %s", a.status, a.raw)
			}
		})
	}
}

// crashAck is what a device was told.
type crashAck struct{ etag, hub string }

// crashLoad registers devices from enough workers for their writes to
// meet in the store's commits until it kills s, at a random moment within
// a second of the first commit of more than one write, and returns the
// latest acknowledgement of every device that got one.
func crashLoad(t *testing.T, s *e2e.Server, key []byte) map[string]crashAck {
	const workers = 24
	var (
		mu     sync.Mutex
		acks   = map[string]crashAck{}
		killed atomic.Bool
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !killed.Load(); i++ {
				// Every fourth request registers an earlier device again.
				n := i
				if i%4 == 3 {
					n = i / 2
				}
				id := fmt.Sprintf("crash-%d-%04d", w, n)
				a, err := mnNewDevice(t, s, id, sas.DeriveDeviceKey(key, id)).try(s.DeviceEndpoint, http.MethodPut, "/register", map[string]any{"registrationId": id})
				mu.Lock()
				if err != nil || a.status != http.StatusAccepted || a.str("status") != dps.StatusAssigned {
					// The server died before or while it answered: the
					// device was told nothing, and what it was told
					// before may have been superseded.
					delete(acks, id)
				} else {
					acks[id] = crashAck{etag: a.str("registrationState.etag"), hub: a.str("registrationState.assignedHub")}
				}
				mu.Unlock()
			}
		}()
	}
	seen, err := crashAwaitBatch(s, mnRoots(t, s))
	if err == nil {
		t.Log(seen)
		time.Sleep(rand.N(time.Second))
	}
	killed.Store(true)
	s.Kill()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return acks
}

// crashAwaitBatch reads the metrics of s until they show a commit of more
// than one write (dpsd_store_commit_batch_size), for a minute at most, and
// says what it saw.
func crashAwaitBatch(s *e2e.Server, roots *x509.CertPool) (string, error) {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := hc.Get("https://" + s.DeviceEndpoint + "/metrics")
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return "", err
		}
		ones, err := crashMetric(string(b), `dpsd_store_commit_batch_size_bucket{le="1"}`)
		if err != nil {
			return "", err
		}
		all, err := crashMetric(string(b), `dpsd_store_commit_batch_size_count`)
		if err != nil {
			return "", err
		}
		if all > ones {
			return fmt.Sprintf("%v of %v commits so far held more than one write", all-ones, all), nil
		}
	}
	return "", errors.New("in a minute of load, the store never committed more than one registration at once")
}

// crashMetric returns the value of the sample named name (labels included)
// in a Prometheus text exposition.
func crashMetric(text, name string) (float64, error) {
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("the metrics have no %s", name)
}

// crashExport exports the instance of s (which reads every record back)
// and returns its registration records by ID.
func crashExport(t *testing.T, s *e2e.Server) map[string]*dps.DeviceRegistrationResult {
	t.Helper()
	args := []string{"export", "--data", s.Dir, "-"}
	if s.Store != "" {
		args = append(args, "--store", s.Store)
	}
	out := devCLI(t, "", args...)
	recs := map[string]*dps.DeviceRegistrationResult{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Registration *struct {
				Result *dps.DeviceRegistrationResult `json:"result"`
			} `json:"registration"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("export line: %v", err)
		}
		if l.Registration != nil {
			recs[l.Registration.Result.RegistrationID] = l.Registration.Result
		}
	}
	if !strings.Contains(out, `{"end":`) {
		t.Fatal("the export has no end line")
	}
	return recs
}
