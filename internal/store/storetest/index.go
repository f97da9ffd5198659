package storetest

import (
	"bytes"
	"testing"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// enabledGroup is an enabled enrollment group with attestation a.
func enabledGroup(id string, a *dps.AttestationMechanism) *dps.EnrollmentGroup {
	return &dps.EnrollmentGroup{EnrollmentGroupID: id, EnrollmentSettings: dps.EnrollmentSettings{Attestation: a, ProvisioningStatus: dps.ProvisioningEnabled}}
}

func signingGroup(id string, primary, secondary *dps.X509CertificateWithInfo) *dps.EnrollmentGroup {
	return enabledGroup(id, &dps.AttestationMechanism{Type: dps.AttestationX509, X509: &dps.X509Attestation{
		SigningCertificates: &dps.X509Certificates{Primary: primary, Secondary: secondary},
	}})
}

func caRefGroup(id, primary, secondary string) *dps.EnrollmentGroup {
	return enabledGroup(id, &dps.AttestationMechanism{Type: dps.AttestationX509, X509: &dps.X509Attestation{
		CAReferences: &dps.X509CAReferences{Primary: primary, Secondary: secondary},
	}})
}

func symmetricGroup(id string) *dps.EnrollmentGroup { return enabledGroup(id, symmetricKey(3)) }

// derSet returns the distinct certificates of ders, as strings.
func derSet(ders [][]byte) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range ders {
		if !seen[string(d)] {
			seen[string(d)] = true
			out = append(out, string(d))
		}
	}
	return out
}

// found fails t unless a lookup succeeded and returned the records named
// want, each once and complete (ok, when not nil, says whether it is).
func found[T any](t *testing.T, what string, got []T, err error, id func(T) string, want []string, ok func(T) bool) {
	t.Helper()
	must(t, err, what)
	ids := make([]string, len(got))
	for i, v := range got {
		if ids[i] = id(v); ok != nil && !ok(v) {
			t.Fatalf("%s: %s is incomplete: %+v", what, ids[i], v)
		}
	}
	sameSet(t, what, ids, want)
}

func testGroupIndex(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	put := func(t *testing.T, s store.Store, g *dps.EnrollmentGroup, ifMatch string) *dps.EnrollmentGroup {
		t.Helper()
		out, err := s.PutGroup(bg(t), g, ifMatch)
		must(t, err, "put group "+g.EnrollmentGroupID)
		return out
	}
	bySigner := func(t *testing.T, s store.Store, c testCert, want ...string) {
		t.Helper()
		got, err := s.GroupsBySigningCert(bg(t), c.thumb)
		found(t, "groups signed by "+c.cert.Subject.CommonName, got, err, groupKind().id, want, func(g *dps.EnrollmentGroup) bool {
			return g.Attestation != nil && g.Attestation.X509 != nil && g.Etag != "" && g.CreatedDateTimeUtc != nil
		})
	}
	bySubject := func(t *testing.T, s store.Store, c testCert, want ...testCert) {
		t.Helper()
		got, err := s.SigningCertsBySubject(bg(t), c.subject())
		must(t, err, "SigningCertsBySubject")
		var w []string
		for _, c := range want {
			w = append(w, string(c.der))
		}
		sameSet(t, "signing certificates with the subject of "+c.cert.Subject.CommonName, derSet(got), w)
	}
	byCA := func(t *testing.T, s store.Store, name string, want ...string) {
		t.Helper()
		got, err := s.GroupsByCA(bg(t), name)
		found(t, "groups referencing "+name, got, err, groupKind().id, want, nil)
	}
	symmetric := func(t *testing.T, s store.Store, want ...string) {
		t.Helper()
		got, err := s.SymmetricKeyGroups(bg(t))
		found(t, "symmetric-key groups", got, err, groupKind().id, want, func(g *dps.EnrollmentGroup) bool {
			return g.Attestation.SymmetricKey != nil && g.Attestation.SymmetricKey.PrimaryKey != ""
		})
	}

	for name, encoded := range map[string]string{
		"PEM":        certs.a.pemText(),
		"base64 DER": certs.a.b64DER(),
		"base64 PEM": certs.a.b64PEM(),
	} {
		t.Run("signing cert/"+name+" is indexed", func(t *testing.T) {
			s := open(t)
			put(t, s, signingGroup("g1", certs.a.withInfo(encoded), nil), "")
			put(t, s, signingGroup("g2", nil, certs.a.withInfo(encoded)), "")
			bySigner(t, s, certs.a, "g1", "g2")
			bySubject(t, s, certs.a, certs.a)
		})
	}

	t.Run("signing cert/primary and secondary", func(t *testing.T) {
		s := open(t)
		put(t, s, signingGroup("G1", certs.a.withInfo(certs.a.pemText()), certs.b.withInfo(certs.b.b64DER())), "")
		put(t, s, signingGroup("g2", certs.b.withInfo(certs.b.pemText()), nil), "")
		bySigner(t, s, certs.a, "G1")
		bySigner(t, s, certs.b, "G1", "g2")
		bySigner(t, s, certs.c)
		bySubject(t, s, certs.b, certs.b)
		bySubject(t, s, certs.c)
	})

	t.Run("signing cert/same cert in both slots is listed once", func(t *testing.T) {
		s := open(t)
		put(t, s, signingGroup("g1", certs.a.withInfo(certs.a.pemText()), certs.a.withInfo(certs.a.b64DER())), "")
		got, err := s.GroupsBySigningCert(bg(t), certs.a.thumb)
		must(t, err, "GroupsBySigningCert")
		if len(got) != 1 {
			t.Fatalf("got %d groups, want 1", len(got))
		}
	})

	t.Run("signing cert/follows updates", func(t *testing.T) {
		s := open(t)
		g1 := put(t, s, signingGroup("g1", certs.a.withInfo(certs.a.pemText()), certs.b.withInfo(certs.b.pemText())), "")
		put(t, s, signingGroup("g2", certs.a.withInfo(certs.a.pemText()), nil), "")

		// Replace g1's primary: its old row must go.
		g1 = put(t, s, signingGroup("g1", certs.c.withInfo(certs.c.pemText()), certs.b.withInfo(certs.b.pemText())), g1.Etag)
		bySigner(t, s, certs.a, "g2")
		bySigner(t, s, certs.c, "g1")
		bySigner(t, s, certs.b, "g1")
		bySubject(t, s, certs.c, certs.c)

		// Writes that fail leave the index alone.
		_, err := s.PutGroup(bg(t), signingGroup("g1", certs.a.withInfo(certs.a.pemText()), nil), `"stale"`)
		wantErr(t, err, store.ErrPreconditionFailed, "put with stale etag")
		_, err = s.PutGroup(bg(t), signingGroup("G1", certs.a.withInfo(certs.a.pemText()), nil), "")
		wantErr(t, err, store.ErrConflict, "create-only put")
		bySigner(t, s, certs.a, "g2")
		bySigner(t, s, certs.c, "g1")

		// Drop the secondary; then switch to symmetric keys.
		g1 = put(t, s, signingGroup("g1", certs.c.withInfo(certs.c.pemText()), nil), g1.Etag)
		bySigner(t, s, certs.b)
		bySubject(t, s, certs.b)
		put(t, s, symmetricGroup("g1"), g1.Etag)
		bySigner(t, s, certs.c)
		bySubject(t, s, certs.c)
	})

	t.Run("signing cert/follows deletes", func(t *testing.T) {
		s := open(t)
		put(t, s, signingGroup("g1", certs.a.withInfo(certs.a.pemText()), nil), "")
		g2 := put(t, s, signingGroup("g2", certs.a.withInfo(certs.a.b64DER()), nil), "")
		must(t, s.DeleteGroup(bg(t), "G1", ""), "delete g1")
		bySigner(t, s, certs.a, "g2")
		bySubject(t, s, certs.a, certs.a)
		must(t, s.DeleteGroup(bg(t), "g2", g2.Etag), "delete g2")
		bySigner(t, s, certs.a)
		bySubject(t, s, certs.a)
		// A group created again under a deleted ID starts clean.
		put(t, s, signingGroup("g1", certs.b.withInfo(certs.b.pemText()), nil), "")
		bySigner(t, s, certs.a)
		bySigner(t, s, certs.b, "g1")
	})

	t.Run("signing cert/subject lookup returns DER of the matching subject only", func(t *testing.T) {
		s := open(t)
		put(t, s, signingGroup("g1", certs.a.withInfo(certs.a.pemText()), certs.b.withInfo(certs.b.pemText())), "")
		got, err := s.SigningCertsBySubject(bg(t), certs.a.subject())
		must(t, err, "SigningCertsBySubject")
		if len(got) == 0 || !bytes.Equal(got[0], certs.a.der) {
			t.Fatalf("got %d certificates, want certificate A", len(got))
		}
		got[0][0] ^= 0xff // callers may mutate what they get
		bySubject(t, s, certs.a, certs.a)
	})

	t.Run("ca refs/case-insensitive, listed once", func(t *testing.T) {
		s := open(t)
		put(t, s, caRefGroup("g1", "RootCA", "OtherCA"), "")
		put(t, s, caRefGroup("g2", "rootca", ""), "")
		put(t, s, caRefGroup("g3", "RootCA", "ROOTCA"), "")
		put(t, s, symmetricGroup("g4"), "")
		byCA(t, s, "ROOTCA", "g1", "g2", "g3")
		byCA(t, s, "otherca", "g1")
		byCA(t, s, "NoSuchCA")
	})

	t.Run("ca refs/follow updates and deletes", func(t *testing.T) {
		s := open(t)
		g1 := put(t, s, caRefGroup("g1", "RootCA", "OtherCA"), "")
		put(t, s, caRefGroup("g2", "RootCA", ""), "")
		put(t, s, caRefGroup("g1", "NewCA", ""), g1.Etag)
		byCA(t, s, "RootCA", "g2")
		byCA(t, s, "OtherCA")
		byCA(t, s, "newca", "g1")
		must(t, s.DeleteGroup(bg(t), "g2", "*"), "delete g2")
		byCA(t, s, "RootCA")
		must(t, s.DeleteGroup(bg(t), "g1", ""), "delete g1")
		byCA(t, s, "NewCA")
	})

	t.Run("symmetric key groups/follow updates and deletes", func(t *testing.T) {
		s := open(t)
		symmetric(t, s)
		g1 := put(t, s, symmetricGroup("g1"), "")
		put(t, s, signingGroup("g2", certs.a.withInfo(certs.a.pemText()), nil), "")
		put(t, s, symmetricGroup("G3"), "")
		put(t, s, caRefGroup("g4", "RootCA", ""), "")
		symmetric(t, s, "g1", "G3")
		put(t, s, caRefGroup("g1", "RootCA", ""), g1.Etag)
		symmetric(t, s, "G3")
		byCA(t, s, "RootCA", "g1", "g4")
		must(t, s.DeleteGroup(bg(t), "g3", ""), "delete g3")
		symmetric(t, s)
		put(t, s, symmetricGroup("g2"), "*")
		symmetric(t, s, "g2")
		bySigner(t, s, certs.a)
	})
}

func testCAIndex(t *testing.T, open func(*testing.T) store.Store, certs testCerts) {
	put := func(t *testing.T, s store.Store, name string, c testCert, ifMatch string) *store.CACertificate {
		t.Helper()
		out, err := s.PutCACertificate(bg(t), &store.CACertificate{Name: name, CertificateDER: c.der,
			SHA256Thumbprint: c.thumb, Subject: c.subject()}, ifMatch)
		must(t, err, "put CA "+name)
		return out
	}
	byThumb := func(t *testing.T, s store.Store, c testCert, want ...string) {
		t.Helper()
		got, err := s.CACertificatesByThumbprint(bg(t), c.thumb)
		found(t, "CAs with the thumbprint of "+c.cert.Subject.CommonName, got, err, caKind(certs).id, want, func(ca *store.CACertificate) bool {
			return bytes.Equal(ca.CertificateDER, c.der)
		})
	}
	bySubject := func(t *testing.T, s store.Store, c testCert, want ...string) {
		t.Helper()
		got, err := s.CACertificatesBySubject(bg(t), c.subject())
		found(t, "CAs with the subject of "+c.cert.Subject.CommonName, got, err, caKind(certs).id, want, nil)
	}

	t.Run("lookups follow writes and deletes", func(t *testing.T) {
		s := open(t)
		ca1 := put(t, s, "ca1", certs.a, "")
		put(t, s, "CA2", certs.a, "")
		put(t, s, "ca3", certs.b, "")
		byThumb(t, s, certs.a, "ca1", "CA2")
		byThumb(t, s, certs.b, "ca3")
		byThumb(t, s, certs.c)
		bySubject(t, s, certs.a, "ca1", "CA2")
		bySubject(t, s, certs.b, "ca3")

		put(t, s, "ca1", certs.c, ca1.Etag)
		byThumb(t, s, certs.a, "CA2")
		byThumb(t, s, certs.c, "ca1")
		bySubject(t, s, certs.a, "CA2")
		bySubject(t, s, certs.c, "ca1")

		must(t, s.DeleteCACertificate(bg(t), "ca2", ""), "delete")
		byThumb(t, s, certs.a)
		bySubject(t, s, certs.a)
	})
}
