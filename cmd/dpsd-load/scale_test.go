package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/dump"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/testutil"
	"github.com/dpsd/dpsd/test/e2e"
)

// TestGenerateExport imports a generated scale instance into SQLite: every
// record is there as the load expects it.
func TestGenerateExport(t *testing.T) {
	ctx := context.Background()
	m := &scaleMeta{Enrollments: 25, Registrations: 10, Groups: 3, Seed: []byte("0123456789abcdef0123456789abcdef")}
	file := filepath.Join(t.TempDir(), "scale.jsonl")
	if err := generateExport(ctx, m, file); err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "dpsd.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := dump.Import(ctx, st, bytes.NewReader(testutil.ReadFile(t, file)), dump.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.Counts{Policies: 1, CACertificates: 3, LinkedHubs: 1, Groups: 3, Enrollments: 25, Registrations: 10}); *n != want {
		t.Errorf("imported %+v, want %+v", *n, want)
	}
	if inst, err := st.Instance(ctx); err != nil || inst.IDScope != m.IDScope || string(inst.ServerCACertPEM) != m.ServerCAPEM {
		t.Errorf("instance %v, %v; want ID scope %s and the server CA of scale.json", inst, err, m.IDScope)
	}

	id := scaleDeviceID(24)
	e, err := st.Enrollment(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if k := e.Attestation.SymmetricKey; k.PrimaryKey != base64.StdEncoding.EncodeToString(scaleKey(m.Seed, "primary", id)) || e.ProvisioningStatus != dps.ProvisioningEnabled {
		t.Errorf("enrollment %s: %s", id, testutil.JSON(t, e))
	}
	if _, err := st.Registration(ctx, scaleDeviceID(9)); err != nil {
		t.Errorf("record of device 9: %v", err)
	}
	if _, err := st.Registration(ctx, scaleDeviceID(10)); err == nil {
		t.Error("device 10 has a record; only the first 10 should")
	}
	// Each group finds its CA, verified; scale.json keeps CA keys.
	for i := range 3 {
		gs, err := st.GroupsByCA(ctx, scaleCAName(i))
		if err != nil || len(gs) != 1 || gs[0].EnrollmentGroupID != scaleGroupID(i) {
			t.Errorf("groups of CA %d: %v, %v", i, gs, err)
		}
		if c, err := st.CACertificate(ctx, scaleCAName(i)); err != nil || !c.IsVerified {
			t.Errorf("CA %d: %+v, %v", i, c, err)
		}
	}
	if len(m.CAs) != 3 {
		t.Fatalf("scale.json keeps %d CA keys, want 3", len(m.CAs))
	}
	for _, c := range m.CAs {
		cert, err := pki.ParseCertificate(c.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := st.CACertificate(ctx, scaleCAName(c.Index))
		if err != nil || !bytes.Equal(stored.CertificateDER, cert.Raw) {
			t.Errorf("kept CA %d is not the stored one", c.Index)
		}
		if _, _, err := pki.NewLeaf(pki.Options{CommonName: "d"}, cert, mustKey(t, c.KeyPEM)); err != nil {
			t.Errorf("kept key of CA %d: %v", c.Index, err)
		}
	}
}

func mustKey(t *testing.T, pem string) crypto.Signer {
	t.Helper()
	k, err := pki.ParsePrivateKeyPEM([]byte(pem), nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSynthPages: the made-up records page like the store's keyset
// pagination, every record once, in order.
func TestSynthPages(t *testing.T) {
	var got []string
	after := ""
	for range 10 {
		p, err := synthPage(after, scaleDevicePrefix, 20, 7, scaleDeviceID, func(i int) (string, error) { return scaleDeviceID(i), nil })
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Items...)
		if p.Next == "" {
			break
		}
		after = p.Next
	}
	want := make([]string, 20)
	for i := range want {
		want[i] = scaleDeviceID(i)
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages: %v", got)
	}
}

// TestScale builds a small scale instance with the dpsd binary, measures
// it, and measures it again without building it.
func TestScale(t *testing.T) {
	bin := e2e.Binary(t)
	dir := t.TempDir()
	scale := func(args ...string) *ScaleReport {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"scale", "--dir", dir, "--dpsd", bin, "--enrollments", "1000", "--groups", "10",
			"--devices", "20", "--concurrency", "4", "--output", "json"}, args...)
		if code := runMain(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d:\n%s\n%s", code, stdout.String(), stderr.String())
		}
		var r ScaleReport
		if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
			t.Fatalf("%v\n%s", err, stdout.String())
		}
		return &r
	}
	r := scale()
	if r.Enrollments != 1000 || r.Registrations != 1000 || r.Groups != 10 || r.Build.Reused || r.Build.ImportSeconds <= 0 || r.Build.DumpMB <= 0 {
		t.Errorf("instance %d/%d/%d, build %+v", r.Enrollments, r.Registrations, r.Groups, r.Build)
	}
	if r.StartupSeconds <= 0 || r.RSSAfterStartMB <= 0 || r.PeakRSSMB < r.RSSAfterLoadMB {
		t.Errorf("start-up %v s, RSS %v MB after start, %v after load, peak %v", r.StartupSeconds, r.RSSAfterStartMB, r.RSSAfterLoadMB, r.PeakRSSMB)
	}
	if len(r.Workloads) != 2 {
		t.Fatalf("%d workloads, want 2", len(r.Workloads))
	}
	for _, w := range r.Workloads {
		checkScaleWorkload(t, w, 20)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "scale.jsonl")); len(m) != 0 {
		t.Error("the export (with every key) is left behind")
	}

	r = scale("--workloads", "symmetric-key", "--baseline=false")
	if !r.Build.Reused || len(r.Workloads) != 1 || r.Workloads[0].Baseline != nil || r.Workloads[0].Workload.Errors != 0 {
		t.Errorf("second run: build %+v, %d workloads", r.Build, len(r.Workloads))
	}
}

func checkScaleWorkload(t *testing.T, r *Report, ops int64) {
	t.Helper()
	for _, ph := range []*Phase{r.Baseline, r.Workload} {
		if ph == nil || ph.Ops != ops || ph.Errors != 0 || ph.PerSecond <= 0 || ph.Server == nil || ph.Server.PID == 0 || ph.Server.AllocsPerOp <= 0 {
			t.Errorf("%s: %s", r.Attestation, testutil.JSON(t, ph))
		}
	}
	if r.Ratio <= 0 || r.Devices != int(ops) {
		t.Errorf("%s: ratio %v, %d devices", r.Attestation, r.Ratio, r.Devices)
	}
}
