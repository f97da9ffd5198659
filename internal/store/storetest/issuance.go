package storetest

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// Certificate issuance: issuing CAs follow the rules of every versioned
// record; issued certificates are written with the registration that
// issued them, listed, looked up and revoked.

func issuingCAKind(certs testCerts) kind[*store.IssuingCA] {
	type C = *store.IssuingCA
	return kind[C]{
		make: func(id, c string) C {
			return &store.IssuingCA{Name: id, CertificateDER: certs.a.der, PrivateKeyPEM: []byte(testKeyPEM), Origin: c,
				CertificateValidityDays: 30, ExtendedKeyUsages: []string{"clientAuth"}}
		},
		id:      func(c C) string { return c.Name },
		content: func(c C) *string { return &c.Origin },
		meta:    func(c C) recordMeta { return recordMeta{c.Etag, c.Created, c.Updated} },
		setMeta: func(c C, m recordMeta) { c.Etag, c.Created, c.Updated = m.etag, m.created, m.updated },
		put:     store.Store.PutIssuingCA, get: store.Store.IssuingCA, del: store.Store.DeleteIssuingCA,
		record: func(c C) store.Record { return store.Record{IssuingCA: c} },
	}
}

// testKeyPEM stands for a private key: the store keeps it as it is.
const testKeyPEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+test+key+bytes+only+for+the+store+contract\n-----END PRIVATE KEY-----\n"

func testIssuingCARoundTrip(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	s := open(t)
	in := &store.IssuingCA{
		Name:                    "Line-CA",
		CertificateDER:          certs.b.der,
		ChainDER:                [][]byte{slices.Clone(certs.c.der), slices.Clone(certs.a.der)},
		PrivateKeyPEM:           []byte(testKeyPEM),
		Origin:                  store.OriginImported,
		CertificateValidityDays: 90,
		ExtendedKeyUsages:       []string{"clientAuth", "serverAuth"},
	}
	out, err := s.PutIssuingCA(bg(t), in, "")
	must(t, err, "put")
	in.ChainDER[0][0] ^= 0xff // the store must have copied it
	for _, got := range []*store.IssuingCA{out, mustIssuingCA(t, s, "line-ca")} {
		if got.Name != "Line-CA" || !bytes.Equal(got.CertificateDER, certs.b.der) || len(got.ChainDER) != 2 ||
			!bytes.Equal(got.ChainDER[0], certs.c.der) || !bytes.Equal(got.ChainDER[1], certs.a.der) ||
			string(got.PrivateKeyPEM) != testKeyPEM || got.Origin != store.OriginImported || got.CertificateValidityDays != 90 ||
			!slices.Equal(got.ExtendedKeyUsages, []string{"clientAuth", "serverAuth"}) {
			t.Fatalf("issuing CA does not round-trip: %+v", got)
		}
	}
	list, err := s.IssuingCAs(bg(t))
	must(t, err, "list")
	if len(list) != 1 || list[0].Name != "Line-CA" {
		t.Fatalf("list: %d issuing CAs", len(list))
	}
}

func mustIssuingCA(t *testing.T, s store.Store, name string) *store.IssuingCA {
	t.Helper()
	c, err := s.IssuingCA(bg(t), name)
	must(t, err, "issuing CA "+name)
	return c
}

// issued is an issued certificate record of c.
func issued(serial, registrationID, group, ca string, c testCert) *store.IssuedCertificate {
	return &store.IssuedCertificate{SerialNumber: serial, RegistrationID: registrationID, EnrollmentGroupID: group, IssuingCA: ca,
		CertificateDER: c.der, NotBefore: c.cert.NotBefore, NotAfter: c.cert.NotAfter}
}

// saveIssued registers registrationID anew, issuing c.
func saveIssued(t *testing.T, s store.Store, c *store.IssuedCertificate) {
	t.Helper()
	r := registrationKind().make(c.RegistrationID, "hub1.azure-devices.net")
	r.Issued = c
	_, err := s.SaveRegistration(bg(t), r, "*", nil)
	must(t, err, "save registration issuing "+c.SerialNumber)
}

func serials(cs []*store.IssuedCertificate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.SerialNumber
	}
	return out
}

func testIssued(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	t.Run("a registration records the certificate it issued", func(t *testing.T) {
		s := open(t)
		before := time.Now().Add(-time.Minute)
		saveIssued(t, s, issued("4a0b", "Dev-1", "Fleet", "Line-CA", certs.a))
		for _, serial := range []string{"4A0B", "4a0b", "4A:0B"} {
			got, err := s.IssuedCertificate(bg(t), serial)
			must(t, err, "issued certificate "+serial)
			if got.SerialNumber != "4A0B" || got.RegistrationID != "Dev-1" || got.EnrollmentGroupID != "Fleet" || got.IssuingCA != "Line-CA" ||
				!bytes.Equal(got.CertificateDER, certs.a.der) || got.SHA256Thumbprint != certs.a.thumb ||
				!got.NotBefore.Equal(certs.a.cert.NotBefore) || !got.NotAfter.Equal(certs.a.cert.NotAfter) ||
				got.Created.Before(before) || got.Revoked() || got.RevocationReason != "" {
				t.Fatalf("issued certificate %s: %+v", serial, got)
			}
		}
		got, err := s.IssuedCertificateByThumbprint(bg(t), strings.ToLower(certs.a.thumb))
		must(t, err, "by thumbprint")
		if got.SerialNumber != "4A0B" {
			t.Fatalf("by thumbprint: %s", got.SerialNumber)
		}
		_, err = s.IssuedCertificateByThumbprint(bg(t), certs.b.thumb)
		wantErr(t, err, store.ErrNotFound, "another thumbprint")
		_, err = s.IssuedCertificate(bg(t), "4a0c")
		wantErr(t, err, store.ErrNotFound, "another serial")
		reg, err := s.Registration(bg(t), "dev-1")
		must(t, err, "registration")
		if reg.Issued != nil {
			t.Fatal("a read registration carries Issued")
		}
	})

	t.Run("the delivered chain goes to the operation, not the record", func(t *testing.T) {
		s := open(t)
		r := registrationKind().make("dev-1", "hub1")
		r.Result.IssuedCertificateChain = []string{certs.a.b64DER(), certs.b.b64DER()}
		r.Result.IssuedClientCertificate = certs.a.pemText()
		out, err := s.SaveRegistration(bg(t), r, "", newOp("op-1", "dev-1", opBase.Add(time.Hour)))
		must(t, err, "save")
		op, err := s.Operation(bg(t), "op-1")
		must(t, err, "operation")
		for what, res := range map[string]*dps.DeviceRegistrationResult{"returned record": out.Result, "operation": op.Result} {
			if !slices.Equal(res.IssuedCertificateChain, r.Result.IssuedCertificateChain) || res.IssuedClientCertificate != certs.a.pemText() {
				t.Fatalf("%s: chain %d, client certificate %d bytes", what, len(res.IssuedCertificateChain), len(res.IssuedClientCertificate))
			}
		}
		got, err := s.Registration(bg(t), "dev-1")
		must(t, err, "registration")
		if len(got.Result.IssuedCertificateChain) != 0 || got.Result.IssuedClientCertificate != "" {
			t.Fatal("the record keeps the delivered certificates")
		}
	})

	t.Run("a refused save records nothing", func(t *testing.T) {
		s := open(t)
		saveIssued(t, s, issued("01", "dev-1", "", "ca", certs.a))
		r := registrationKind().make("dev-1", "hub2")
		r.Issued = issued("02", "dev-1", "", "ca", certs.b)
		_, err := s.SaveRegistration(bg(t), r, "", nil)
		wantErr(t, err, store.ErrConflict, "create-only save")
		_, err = s.IssuedCertificate(bg(t), "02")
		wantErr(t, err, store.ErrNotFound, "the certificate of the refused save")
	})

	t.Run("list by registration and issuing CA, in pages", func(t *testing.T) {
		s := open(t)
		for _, c := range []*store.IssuedCertificate{
			issued("10", "Dev-1", "", "CA-1", certs.a), issued("11", "dev-2", "", "CA-1", certs.b),
			issued("12", "dev-1", "", "CA-2", certs.c), issued("13", "dev-1", "", "ca-1", certs.a),
		} {
			saveIssued(t, s, c)
		}
		for _, c := range []struct {
			f    store.IssuedFilter
			want []string
		}{
			{store.IssuedFilter{}, []string{"10", "11", "12", "13"}},
			{store.IssuedFilter{RegistrationID: "DEV-1"}, []string{"10", "12", "13"}},
			{store.IssuedFilter{IssuingCA: "ca-1"}, []string{"10", "11", "13"}},
			{store.IssuedFilter{RegistrationID: "dev-1", IssuingCA: "CA-1"}, []string{"10", "13"}},
			{store.IssuedFilter{RegistrationID: "dev-3"}, nil},
		} {
			var got []string
			after := ""
			for range 5 {
				p, err := s.IssuedCertificates(bg(t), c.f, after, 2)
				must(t, err, "list")
				if len(p.Items) > 2 {
					t.Fatalf("%+v: a page of %d with limit 2", c.f, len(p.Items))
				}
				got = append(got, serials(p.Items)...)
				if after = p.Next; after == "" {
					break
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("%+v: %q, want %q", c.f, got, c.want)
			}
		}
	})

	t.Run("revoke one: the first revocation stays", func(t *testing.T) {
		s := open(t)
		saveIssued(t, s, issued("20", "dev-1", "", "CA-1", certs.a))
		saveIssued(t, s, issued("21", "dev-1", "", "CA-1", certs.b))
		saveIssued(t, s, issued("22", "dev-2", "", "CA-2", certs.c))
		got, err := s.RevokeIssuedCertificates(bg(t), store.Revocation{SerialNumber: "20", Reason: "keyCompromise"})
		must(t, err, "revoke")
		if len(got) != 1 || got[0].SerialNumber != "20" || !got[0].Revoked() || got[0].RevocationReason != "keyCompromise" {
			t.Fatalf("revoke returned %+v", got)
		}
		first := got[0].RevokedAt
		again, err := s.RevokeIssuedCertificates(bg(t), store.Revocation{SerialNumber: "20", Reason: "superseded"})
		must(t, err, "revoke again")
		if !again[0].RevokedAt.Equal(first) || again[0].RevocationReason != "keyCompromise" {
			t.Fatalf("revoking again changed the revocation: %+v", again[0])
		}
		c, err := s.IssuedCertificate(bg(t), "21")
		must(t, err, "the other certificate")
		if c.Revoked() {
			t.Fatal("revoking one certificate revoked another")
		}
		_, err = s.RevokeIssuedCertificates(bg(t), store.Revocation{SerialNumber: "99"})
		wantErr(t, err, store.ErrNotFound, "revoke an unknown serial")
		revoked, err := s.RevokedCertificates(bg(t), "ca-1")
		must(t, err, "revoked certificates")
		if !slices.Equal(serials(revoked), []string{"20"}) {
			t.Fatalf("revoked of CA-1: %q", serials(revoked))
		}
		revoked, err = s.RevokedCertificates(bg(t), "CA-2")
		must(t, err, "revoked certificates")
		if len(revoked) != 0 {
			t.Fatalf("revoked of CA-2: %q", serials(revoked))
		}
	})

	t.Run("revoke a device's certificates", func(t *testing.T) {
		s := open(t)
		saveIssued(t, s, issued("30", "Dev-1", "", "CA-1", certs.a))
		saveIssued(t, s, issued("31", "dev-1", "", "CA-2", certs.b))
		saveIssued(t, s, issued("32", "dev-2", "", "CA-1", certs.c))
		_, err := s.RevokeIssuedCertificates(bg(t), store.Revocation{SerialNumber: "31", Reason: "superseded"})
		must(t, err, "revoke one first")
		got, err := s.RevokeIssuedCertificates(bg(t), store.Revocation{RegistrationID: "DEV-1", Reason: "cessationOfOperation"})
		must(t, err, "revoke the device's")
		if !slices.Equal(serials(got), []string{"30", "31"}) {
			t.Fatalf("revoked %q, want 30 and 31", serials(got))
		}
		for _, c := range got {
			want := map[string]string{"30": "cessationOfOperation", "31": "superseded"}[c.SerialNumber]
			if !c.Revoked() || c.RevocationReason != want {
				t.Errorf("%s: revoked %v reason %q, want %q", c.SerialNumber, c.RevokedAt, c.RevocationReason, want)
			}
		}
		c, err := s.IssuedCertificate(bg(t), "32")
		must(t, err, "another device's certificate")
		if c.Revoked() {
			t.Fatal("another device's certificate was revoked")
		}
		none, err := s.RevokeIssuedCertificates(bg(t), store.Revocation{RegistrationID: "dev-3"})
		must(t, err, "a device without certificates")
		if len(none) != 0 {
			t.Fatalf("a device without certificates: %d revoked", len(none))
		}
		for _, r := range []store.Revocation{{}, {SerialNumber: "30", RegistrationID: "dev-1"}} {
			if _, err := s.RevokeIssuedCertificates(bg(t), r); err == nil {
				t.Errorf("%+v: accepted", r)
			}
		}
	})

	t.Run("deleting the issuing CA keeps what it issued", func(t *testing.T) {
		s := open(t)
		issuingCAKind(certs).create(t, s, "CA-1", store.OriginGenerated)
		saveIssued(t, s, issued("40", "dev-1", "", "CA-1", certs.a))
		must(t, s.DeleteIssuingCA(bg(t), "ca-1", ""), "delete the CA")
		_, err := s.IssuedCertificate(bg(t), "40")
		must(t, err, "the certificate of a deleted CA")
	})

	t.Run("restore keeps the revocation and the issue time", func(t *testing.T) {
		a, b := open(t), open(t)
		saveIssued(t, a, issued("50", "dev-1", "Fleet", "CA-1", certs.a))
		_, err := a.RevokeIssuedCertificates(bg(t), store.Revocation{SerialNumber: "50", Reason: "keyCompromise"})
		must(t, err, "revoke")
		src, err := a.IssuedCertificate(bg(t), "50")
		must(t, err, "read")
		must(t, b.Restore(bg(t), []store.Record{{IssuedCertificate: src}, {IssuingCA: issuingCAKind(certs).make("CA-1", store.OriginGenerated)}}), "restore")
		got, err := b.IssuedCertificate(bg(t), "50")
		must(t, err, "restored")
		sameJSON(t, "restored issued certificate", got, src)
		revoked, err := b.RevokedCertificates(bg(t), "ca-1")
		must(t, err, "revoked")
		if len(revoked) != 1 {
			t.Fatalf("restored store revokes %d certificates of CA-1", len(revoked))
		}
		// Restoring again overwrites, and a revocation can be restored away
		// only by the export it came from.
		src.RevokedAt, src.RevocationReason = time.Time{}, ""
		must(t, b.Restore(bg(t), []store.Record{{IssuedCertificate: src}}), "restore again")
		got, err = b.IssuedCertificate(bg(t), "50")
		must(t, err, "restored again")
		if got.Revoked() {
			t.Fatal("restore did not overwrite the record")
		}
		c, err := b.Counts(bg(t))
		must(t, err, "counts")
		if c.IssuingCAs != 1 || c.IssuedCertificates != 1 {
			t.Fatalf("counts %+v", *c)
		}
		if err := b.Restore(bg(t), []store.Record{{IssuedCertificate: &store.IssuedCertificate{SerialNumber: "51"}}}); err == nil {
			t.Fatal("Restore accepted an issued certificate without its certificate")
		}
		if err := b.Restore(bg(t), []store.Record{{IssuedCertificate: src, IssuingCA: issuingCAKind(certs).make("x", "")}}); err == nil {
			t.Fatal("Restore accepted a record with two items")
		}
		_, err = b.IssuingCA(bg(t), "x")
		wantErr(t, err, store.ErrNotFound, "issuing CA of the refused record")
	})
}
