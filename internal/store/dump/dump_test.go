package dump_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/dump"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/store/storetest"
	"github.com/dpsd/dpsd/internal/testutil"
)

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "dpsd.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	s, err := sqlstore.Open(t.Context(), storetest.PostgresSchema(t, storetest.PostgresDSN(t)), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func instance(scope string) *store.Instance {
	return &store.Instance{IDScope: scope, CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 600, time.UTC),
		AllocationPolicy: dps.AllocationHashed,
		ServerCACertPEM:  []byte("-----BEGIN CERTIFICATE-----\nCA " + scope + "\n-----END CERTIFICATE-----\n"),
		ServerCAKeyPEM:   []byte("-----BEGIN PRIVATE KEY-----\nCA KEY\n-----END PRIVATE KEY-----\n"),
		ServerCertPEM:    []byte("-----BEGIN CERTIFICATE-----\nSERVER\n-----END CERTIFICATE-----\n"),
		ServerKeyPEM:     []byte("-----BEGIN PRIVATE KEY-----\nSERVER KEY\n-----END PRIVATE KEY-----\n"),
		HostNames:        []string{"dps.example.com"}, TPMChallengeSecret: []byte("TPM challenge secret")}
}

func caCert(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Fleet Signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	return der
}

// fill writes an instance with every kind of record into s: enough
// enrollments and records to span several export pages and import batches.
func fill(t *testing.T, s store.Store, enrollments int) {
	ctx := t.Context()
	_, err := s.InitInstance(ctx, instance("0ne0000AAAA"))
	must(t, err)
	_, err = s.PutPolicy(ctx, &store.Policy{Name: "provisioningserviceowner", PrimaryKey: "cHJpbWFyeQ==", SecondaryKey: "c2Vjb25kYXJ5", Rights: dps.AllRights}, "")
	must(t, err)
	_, err = s.PutPolicy(ctx, &store.Policy{Name: "reader", PrimaryKey: "cmVhZGVy", Rights: []string{dps.RightEnrollmentRead}}, "")
	must(t, err)
	der := caCert(t)
	_, err = s.PutCACertificate(ctx, &store.CACertificate{Name: "Root", CertificateDER: der, IsVerified: true, VerificationCode: "ABC"}, "")
	must(t, err)
	_, err = s.PutLinkedHub(ctx, &store.LinkedHub{Name: "hub1.azure-devices.net", ConnectionString: "HostName=hub1.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5", AllocationWeight: 2, ApplyAllocationPolicy: true,
		DeviceRegistry: "azure-iothub"}, "")
	must(t, err)
	_, err = s.PutLinkedHub(ctx, &store.LinkedHub{Name: "broker.example:8883", AllocationWeight: 1, DeviceRegistry: "webhook",
		RegistryWebhookURL: "https://registry.example/dpsd?k=v", RegistryWebhookSecret: "a-secret-of-sixteen-chars"}, "")
	must(t, err)
	pemCert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	_, err = s.PutGroup(ctx, &dps.EnrollmentGroup{EnrollmentGroupID: "Signed", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationX509,
		X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: pemCert}}}}}}, "")
	must(t, err)
	_, err = s.PutGroup(ctx, &dps.EnrollmentGroup{EnrollmentGroupID: "Keys", EnrollmentSettings: dps.EnrollmentSettings{Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey,
		SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "Z3JvdXBwcmltYXJ5", SecondaryKey: "Z3JvdXBzZWNvbmRhcnk="}}, InitialTwin: &dps.InitialTwin{Tags: json.RawMessage(`{"fleet":"a"}`)}}}, "")
	must(t, err)
	_, err = s.PutIssuingCA(ctx, &store.IssuingCA{Name: "Line-CA", CertificateDER: der, ChainDER: [][]byte{der},
		PrivateKeyPEM: []byte("-----BEGIN PRIVATE KEY-----\nISSUING CA KEY\n-----END PRIVATE KEY-----\n"), Origin: store.OriginImported,
		CertificateValidityDays: 30, ExtendedKeyUsages: []string{"clientAuth"}}, "")
	must(t, err)
	// Many enrollments in few transactions: Restore is the quick path in.
	var recs []store.Record
	for i := range enrollments {
		recs = append(recs, store.Record{Enrollment: &dps.IndividualEnrollment{RegistrationID: fmt.Sprintf("Dev-%05d", i),
			EnrollmentSettings: dps.EnrollmentSettings{
				Attestation: &dps.AttestationMechanism{Type: dps.AttestationSymmetricKey,
					SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeWtleQ==", SecondaryKey: "c2Vjb25kYXJ5a2V5"}},
				ProvisioningStatus: dps.ProvisioningEnabled,
			}}})
		if len(recs) == 1000 {
			must(t, s.Restore(ctx, recs))
			recs = recs[:0]
		}
	}
	must(t, s.Restore(ctx, recs))
	// Records written the ordinary way, some twice, so that created and
	// updated differ.
	for i := range 1200 {
		id := fmt.Sprintf("Dev-%05d", i)
		r := &store.Registration{Result: &dps.DeviceRegistrationResult{RegistrationID: id, DeviceID: id, Status: dps.StatusAssigned,
			AssignedHub: "hub1.azure-devices.net", Substatus: dps.SubstatusInitialAssignment}}
		if i%2 == 0 {
			r.EnrollmentGroupID = "Keys"
			r.Result.SymmetricKey = &dps.SymmetricKeyRegistrationResult{EnrollmentGroupID: "Keys"}
			r.DevicePayload = json.RawMessage(`{"modelId": "dtmi:x;1"}`)
		}
		if i%3 == 0 {
			r.Placement = store.Placement{Hub: "hub1.azure-devices.net", DeviceID: id}
			r.AppliedTwin = &dps.InitialTwin{Tags: json.RawMessage(`{"fleet":"a"}`),
				Properties: &dps.InitialTwinProperties{Desired: json.RawMessage(`{"interval":30}`)}}
			// Some registrations issued a certificate (here, any DER).
			r.Issued = &store.IssuedCertificate{SerialNumber: fmt.Sprintf("4A%06X", i), RegistrationID: id, EnrollmentGroupID: r.EnrollmentGroupID,
				IssuingCA: "Line-CA", CertificateDER: der, NotBefore: time.Unix(1700000000, 0).UTC(), NotAfter: time.Unix(1800000000, 0).UTC()}
		}
		out, err := s.SaveRegistration(ctx, r, "", nil)
		must(t, err)
		r.Issued = nil
		if i%100 == 0 {
			r.Result.Substatus = dps.SubstatusReprovisionedToInitialAssignment
			_, err = s.SaveRegistration(ctx, r, out.Result.Etag, nil)
			must(t, err)
		}
	}
	_, err = s.RevokeIssuedCertificates(ctx, store.Revocation{SerialNumber: "4A000003", Reason: "keyCompromise"})
	must(t, err)
}

// snapshot reads everything a store holds, as JSON, to compare stores.
func snapshot(t *testing.T, s store.Store) map[string]string {
	ctx := t.Context()
	out := map[string]string{}
	add := func(k string, v any) {
		b, err := json.Marshal(v)
		must(t, err)
		out[k] = string(b)
	}
	read := func(k string) func(any, error) {
		return func(v any, err error) {
			must(t, err)
			add(k, v)
		}
	}
	read("instance")(s.Instance(ctx))
	read("policies")(s.Policies(ctx))
	read("cas")(s.CACertificates(ctx))
	read("hubs")(s.LinkedHubs(ctx))
	for _, g := range testutil.All(t, s.Groups) {
		add("group "+g.EnrollmentGroupID, g)
	}
	for _, e := range testutil.All(t, s.Enrollments) {
		add("enrollment "+e.RegistrationID, e)
	}
	for _, r := range testutil.All(t, s.Registrations) {
		add("registration "+r.Result.RegistrationID, r)
	}
	read("issuing CAs")(s.IssuingCAs(ctx))
	issued := func(ctx context.Context, after string, limit int) (store.Page[*store.IssuedCertificate], error) {
		return s.IssuedCertificates(ctx, store.IssuedFilter{}, after, limit)
	}
	for _, c := range testutil.All(t, issued) {
		add("issued "+c.SerialNumber, c)
	}
	return out
}

func sameStores(t *testing.T, a, b store.Store) {
	t.Helper()
	sa, sb := snapshot(t, a), snapshot(t, b)
	if len(sa) != len(sb) {
		t.Fatalf("%d items, then %d", len(sa), len(sb))
	}
	for k, v := range sa {
		if sb[k] != v {
			t.Fatalf("%s differs:\n %s\n %s", k, v, sb[k])
		}
	}
}

func export(t *testing.T, s store.Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	var progress []int64
	n, err := dump.Export(t.Context(), s, &buf, dump.ExportOptions{DpsdVersion: "test", Progress: func(d int64) { progress = append(progress, d) }})
	must(t, err)
	c, err := s.Counts(t.Context())
	must(t, err)
	c.Operations = 0
	if *n != *c {
		t.Fatalf("Export wrote %+v, the store holds %+v", *n, *c)
	}
	if len(progress) == 0 || progress[len(progress)-1] != dump.Total(n) {
		t.Fatalf("progress %v, want it to end at %d", progress, dump.Total(n))
	}
	return buf.Bytes()
}

func testRoundTrip(t *testing.T, open func(*testing.T) store.Store) {
	src := openSQLite(t)
	fill(t, src, 2345)
	b := export(t, src)

	dst := open(t)
	var header *dump.Header
	var last int64
	n, err := dump.Import(t.Context(), dst, bytes.NewReader(b), dump.ImportOptions{
		Header:   func(h *dump.Header) { header = h },
		Progress: func(d int64) { last = d },
	})
	must(t, err)
	if header == nil || header.IDScope != "0ne0000AAAA" || dump.Total(&header.Counts) != dump.Total(n) || last != dump.Total(n) {
		t.Fatalf("header %+v, progress %d, imported %+v", header, last, *n)
	}
	sameStores(t, src, dst)
	if revoked, err := dst.RevokedCertificates(t.Context(), "line-ca"); err != nil || len(revoked) != 1 || revoked[0].RevocationReason != "keyCompromise" {
		t.Fatalf("revoked certificates after import: %v %+v", err, revoked)
	}

	// The index rows were rebuilt: the group is found by its certificate.
	cas, err := dst.CACertificates(t.Context())
	must(t, err)
	gs, err := dst.GroupsBySigningCert(t.Context(), cas[0].SHA256Thumbprint)
	must(t, err)
	if len(gs) != 1 || gs[0].EnrollmentGroupID != "Signed" {
		t.Fatalf("groups by signing certificate after import: %d", len(gs))
	}
	// An etag from the old database still guards writes in the new one.
	e, err := src.Enrollment(t.Context(), "dev-00007")
	must(t, err)
	_, err = dst.PutEnrollment(t.Context(), e, e.Etag)
	must(t, err)

	// Importing again changes nothing but what was written since.
	_, err = dump.Import(t.Context(), dst, bytes.NewReader(b), dump.ImportOptions{})
	must(t, err)
	sameStores(t, src, dst)
}

func TestRoundTripSQLite(t *testing.T) { testRoundTrip(t, openSQLite) }

func TestRoundTripPostgres(t *testing.T) { testRoundTrip(t, openPostgres) }

func TestImportRefusesAnotherInstance(t *testing.T) {
	src := openSQLite(t)
	fill(t, src, 3)
	b := export(t, src)
	dst := openSQLite(t)
	_, err := dst.InitInstance(t.Context(), instance("0ne0000BBBB"))
	must(t, err)
	_, err = dump.Import(t.Context(), dst, bytes.NewReader(b), dump.ImportOptions{})
	if !errors.Is(err, dump.ErrOtherInstance) || !strings.Contains(err.Error(), "0ne0000BBBB") || !strings.Contains(err.Error(), "0ne0000AAAA") {
		t.Fatalf("import into another instance: %v", err)
	}
	c, err := dst.Counts(t.Context())
	must(t, err)
	if *c != (store.Counts{}) {
		t.Fatalf("the refused import wrote %+v", *c)
	}
	_, err = dump.Import(t.Context(), dst, bytes.NewReader(b), dump.ImportOptions{Force: true})
	must(t, err)
	sameStores(t, src, dst)
}

// TestImportRefusesBadFiles: a file that fails anywhere, its last line or
// a record past the first batches included, leaves the database as it was
// (no instance, no record), on both engines.
func TestImportRefusesBadFiles(t *testing.T) {
	src := openSQLite(t)
	fill(t, src, 600)
	good := export(t, src)
	lines := strings.SplitAfter(string(good), "\n")
	end := len(lines) - 2 // the last element is empty
	// Past the policies, CAs, hubs and groups, and past the first batch of
	// enrollments: earlier lines were written in the transaction already.
	mid := 560
	if !strings.HasPrefix(lines[mid], `{"enrollment":`) || !strings.HasPrefix(lines[mid+1], `{"enrollment":`) {
		t.Fatalf("line %d is not an enrollment: %.60s", mid+1, lines[mid])
	}
	latin1 := strings.Replace(lines[mid], `"provisioningStatus":"enabled"`, "\"provisioningStatus\":\"enabled\",\"initialTwin\":{\"tags\":{\"site\":\"M\xfcnchen\"}}", 1)
	if latin1 == lines[mid] {
		t.Fatalf("line %d has no provisioningStatus: %.200s", mid+1, lines[mid])
	}
	cases := map[string]struct {
		file string
		want string
	}{
		"empty":                {"", "empty"},
		"not an export":        {`{"enrollment":{"registrationId":"x"}}` + "\n", "not a dpsd export"},
		"a newer format":       {strings.Replace(lines[0], `"version":1`, `"version":2`, 1), "version 2"},
		"no instance":          {lines[0] + lines[2], "instance must follow the header"},
		"cut short":            {strings.Join(lines[:end-10], ""), "cut short"},
		"a corrupt line":       {strings.Join(lines[:5], "") + "{\"enrollment\": {\n" + strings.Join(lines[5:], ""), "line 6"},
		"two kinds in a line":  {strings.Join(lines[:3], "") + `{"enrollment":{"registrationId":"x"},"policy":{"name":"p"}}` + "\n", "exactly one record"},
		"an unknown kind":      {strings.Join(lines[:3], "") + `{"device":{}}` + "\n", "exactly one record"},
		"a record after end":   {string(good) + lines[4], "after the end"},
		"counts do not match":  {strings.Join(lines[:end-1], "") + lines[end], "counts"},
		"a record without key": {strings.Join(lines[:3], "") + `{"enrollment":{"attestation":{"type":"symmetricKey"}}}` + "\n" + lines[end], "registration ID"},
		"the store refuses a record midway": {strings.Join(lines[:mid], "") + `{"caCertificate":{"name":"","certificate":""}}` + "\n" + strings.Join(lines[mid:], ""),
			"a CA certificate without a name"},
		"a record midway is not UTF-8": {strings.Join(lines[:mid], "") + latin1 + strings.Join(lines[mid+1:], ""),
			fmt.Sprintf("line %d: the record cannot be stored: it is not UTF-8", mid+1)},
	}
	for engine, open := range map[string]func(*testing.T) store.Store{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(engine, func(t *testing.T) {
			for name, tt := range cases {
				t.Run(name, func(t *testing.T) {
					dst := open(t)
					_, err := dump.Import(t.Context(), dst, strings.NewReader(tt.file), dump.ImportOptions{})
					if err == nil || !strings.Contains(err.Error(), tt.want) {
						t.Fatalf("import: %v, want an error saying %q", err, tt.want)
					}
					untouched(t, dst, nil, store.Counts{})
				})
			}
		})
	}
}

// TestImportForceFailingLeavesTheOldInstance: an import --force that fails
// keeps the instance and the records the database served.
func TestImportForceFailingLeavesTheOldInstance(t *testing.T) {
	src := openSQLite(t)
	fill(t, src, 600)
	lines := strings.SplitAfter(string(export(t, src)), "\n")
	cut := strings.Join(lines[:len(lines)-12], "")
	for engine, open := range map[string]func(*testing.T) store.Store{"sqlite": openSQLite, "postgres": openPostgres} {
		t.Run(engine, func(t *testing.T) {
			dst := open(t)
			old, err := dst.InitInstance(t.Context(), instance("0ne0000BBBB"))
			must(t, err)
			_, err = dst.PutPolicy(t.Context(), &store.Policy{Name: "mine", PrimaryKey: "bWluZQ==", Rights: dps.AllRights}, "")
			must(t, err)
			_, err = dump.Import(t.Context(), dst, strings.NewReader(cut), dump.ImportOptions{Force: true})
			if err == nil || !strings.Contains(err.Error(), "cut short") {
				t.Fatalf("import --force of a cut file: %v", err)
			}
			untouched(t, dst, old, store.Counts{Policies: 1})
		})
	}
}

// untouched fails t unless st serves inst (nil: none) and holds counts.
func untouched(t *testing.T, st store.Store, inst *store.Instance, counts store.Counts) {
	t.Helper()
	got, err := st.Instance(t.Context())
	switch {
	case inst == nil && !errors.Is(err, store.ErrNotFound):
		t.Fatalf("the failed import left an instance: %+v, %v", got, err)
	case inst != nil && (err != nil || got.IDScope != inst.IDScope):
		t.Fatalf("the failed import changed the instance: %+v, %v; it was %s", got, err, inst.IDScope)
	}
	c, err := st.Counts(t.Context())
	must(t, err)
	if *c != counts {
		t.Fatalf("the failed import left %+v, want %+v", *c, counts)
	}
}

func TestExportWithoutInstance(t *testing.T) {
	_, err := dump.Export(context.Background(), openSQLite(t), &bytes.Buffer{}, dump.ExportOptions{})
	if err == nil || !strings.Contains(err.Error(), "no instance") {
		t.Fatalf("export of an empty database: %v", err)
	}
}
