package issuance

import (
	"crypto/x509"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/store/sqlstore"
	"github.com/dpsd/dpsd/internal/testutil"
)

func revokedAt(serial string, at, notAfter time.Time, reason string) *store.IssuedCertificate {
	return &store.IssuedCertificate{SerialNumber: serial, RevokedAt: at, NotAfter: notAfter, RevocationReason: reason}
}

func TestBuildCRL(t *testing.T) {
	ca, err := Generate("ca", GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(ca.CertificateDER)
	// 40 minutes into an hour, after the CA was made.
	hour := time.Now().UTC().Add(2 * time.Hour).Truncate(time.Hour)
	now := hour.Add(40 * time.Minute)
	year := now.AddDate(1, 0, 0)
	revoked := []*store.IssuedCertificate{
		revokedAt("4A01", now.Add(-48*time.Hour), year, "keyCompromise"),
		revokedAt("4A02", now.Add(-30*time.Minute+time.Millisecond), year, ""),       // in this hour: dates the CRL
		revokedAt("4A03", now.Add(-72*time.Hour), now.Add(-time.Hour), "superseded"), // expired: left out
		revokedAt("4A04", now.Add(-time.Hour), year, "cessationOfOperation"),
	}
	der, this, err := BuildCRL(ca, revoked, now)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(caCert); err != nil {
		t.Fatalf("the CRL is not signed by its CA: %v", err)
	}
	asOf := now.Add(-30*time.Minute + time.Millisecond)
	if !this.Equal(asOf) || !crl.ThisUpdate.Equal(asOf.Truncate(time.Second)) || !crl.NextUpdate.Equal(hour.Add(24*time.Hour)) ||
		crl.Number.Cmp(big.NewInt(asOf.UnixNano())) != 0 {
		t.Fatalf("thisUpdate %s nextUpdate %s number %s", crl.ThisUpdate, crl.NextUpdate, crl.Number)
	}
	var got []string
	for _, e := range crl.RevokedCertificateEntries {
		got = append(got, strings.ToUpper(e.SerialNumber.Text(16))+"/"+e.RevocationTime.UTC().Format(time.RFC3339)+"/"+big.NewInt(int64(e.ReasonCode)).String())
	}
	want := []string{
		"4A01/" + now.Add(-48*time.Hour).Format(time.RFC3339) + "/1",
		"4A02/" + now.Add(-30*time.Minute).Format(time.RFC3339) + "/0",
		"4A04/" + now.Add(-time.Hour).Format(time.RFC3339) + "/5",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("entries %q, want %q", got, want)
	}

	// The next hour: a new number, larger, without another revocation.
	der2, this2, err := BuildCRL(ca, revoked, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	crl2, _ := x509.ParseRevocationList(der2)
	if !this2.Equal(hour.Add(time.Hour)) || crl2.Number.Cmp(crl.Number) <= 0 {
		t.Fatalf("next hour: thisUpdate %s number %s (before %s)", this2, crl2.Number, crl.Number)
	}
	// No revocation: an empty list of the hour.
	der3, _, err := BuildCRL(ca, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	crl3, _ := x509.ParseRevocationList(der3)
	if len(crl3.RevokedCertificateEntries) != 0 || !crl3.ThisUpdate.Equal(hour) {
		t.Fatalf("empty CRL: %d entries, thisUpdate %s", len(crl3.RevokedCertificateEntries), crl3.ThisUpdate)
	}
}

func TestCanonicalReason(t *testing.T) {
	for in, want := range map[string]string{"": "", "unspecified": "", "KEYCOMPROMISE": "keyCompromise", "superseded": "superseded"} {
		if got, err := CanonicalReason(in); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"certificateHold", "removeFromCRL", "stolen"} {
		if _, err := CanonicalReason(in); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

func TestCRLHandler(t *testing.T) {
	st, err := sqlstore.Open(t.Context(), filepath.Join(t.TempDir(), "dpsd.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ca, err := Generate("Line 3", GenerateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutIssuingCA(t.Context(), ca, ""); err != nil {
		t.Fatal(err)
	}
	log, _ := testutil.NewLogger(t, slog.LevelDebug)
	h := &CRLs{Store: st, Log: log}
	get := func(method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	w := get(http.MethodGet, CRLPath("line 3"))
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("GET %s: %d %s", CRLPath("line 3"), w.Code, w.Body)
	}
	if _, err := x509.ParseRevocationList(w.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
	if again := get(http.MethodGet, CRLPath("line 3")); !slices.Equal(again.Body.Bytes(), w.Body.Bytes()) {
		t.Fatal("the same list was signed again")
	}
	// Revocations in quick succession each make a new list.
	for i, serial := range []string{"4A01", "4A02"} {
		reg := &store.Registration{Result: &dps.DeviceRegistrationResult{RegistrationID: "dev-" + serial, Status: dps.StatusAssigned},
			Issued: &store.IssuedCertificate{SerialNumber: serial, RegistrationID: "dev-" + serial, IssuingCA: "Line 3", CertificateDER: ca.CertificateDER,
				NotAfter: time.Now().Add(time.Hour)}}
		if _, err := st.SaveRegistration(t.Context(), reg, "", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := st.RevokeIssuedCertificates(t.Context(), store.Revocation{SerialNumber: serial}); err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(get(http.MethodGet, CRLPath("line 3")).Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if len(crl.RevokedCertificateEntries) != i+1 {
			t.Fatalf("after %d revocations the CRL lists %d", i+1, len(crl.RevokedCertificateEntries))
		}
	}
	for path, want := range map[string]int{
		"/crl/unknown.crl": http.StatusNotFound,
		"/crl/Line%203":    http.StatusNotFound,
		"/crl/a%2Fb.crl":   http.StatusNotFound,
		"/crl/.crl":        http.StatusNotFound,
	} {
		if w := get(http.MethodGet, path); w.Code != want {
			t.Errorf("GET %s: %d, want %d", path, w.Code, want)
		}
	}
	if w := get(http.MethodPost, CRLPath("line 3")); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", w.Code)
	}
}
