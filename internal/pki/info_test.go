package pki

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rawName encodes attributes in the given order, one RDN each, with the
// given ASN.1 string tag.
func rawName(t *testing.T, attrs ...any) []byte {
	t.Helper()
	var seq []attributeSET
	for i := 0; i < len(attrs); i += 2 {
		var v asn1.RawValue
		switch val := attrs[i+1].(type) {
		case string:
			v = asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte(val)}
		case asn1.RawValue:
			v = val
		}
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, attributeSET{{Type: attrs[i].(asn1.ObjectIdentifier), Value: asn1.RawValue{FullBytes: b}}})
	}
	der, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidC  = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidST = asn1.ObjectIdentifier{2, 5, 4, 8}
	oidE  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidX  = asn1.ObjectIdentifier{1, 2, 3, 4}
)

func TestDistinguishedName(t *testing.T) {
	multi, err := asn1.Marshal([]attributeSET{{
		{Type: oidO, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("A")}},
		{Type: oidOU, Value: asn1.RawValue{Tag: asn1.TagUTF8String, Bytes: []byte("B")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		raw  []byte
		want string
	}{
		// Azure's example: a RIoT certificate whose subject is encoded CN, C, O.
		"azure-riot-order": {rawName(t, oidCN, "RIoT_COMMON_device", oidC, "US", oidO, "MSR_TEST"), "CN=RIoT_COMMON_device, C=US, O=MSR_TEST"},
		"openssl-order":    {rawName(t, oidC, "US", oidST, "WA", oidO, "Contoso", oidCN, "dev"), "C=US, S=WA, O=Contoso, CN=dev"},
		"cn-only":          {rawName(t, oidCN, "my-x509-device"), "CN=my-x509-device"},
		"spaces-inside":    {rawName(t, oidCN, "Azure IoT Hub CA Cert Test Only"), "CN=Azure IoT Hub CA Cert Test Only"},
		"quoted-comma":     {rawName(t, oidO, "Contoso, Ltd.", oidCN, "x"), `O="Contoso, Ltd.", CN=x`},
		"quoted-quote":     {rawName(t, oidCN, `say "hi"`), `CN="say ""hi"""`},
		"quoted-leading-#": {rawName(t, oidCN, "#1"), `CN="#1"`},
		"quoted-edges":     {rawName(t, oidCN, " x "), `CN=" x "`},
		"empty-value":      {rawName(t, oidCN, ""), `CN=""`},
		"email-and-oid":    {rawName(t, oidE, "a@b.c", oidX, "v"), "E=a@b.c, OID.1.2.3.4=v"},
		"printable":        {rawName(t, oidCN, asn1.RawValue{Tag: asn1.TagPrintableString, Bytes: []byte("p")}), "CN=p"},
		"bmp":              {rawName(t, oidCN, asn1.RawValue{Tag: asn1.TagBMPString, Bytes: []byte{0, 'h', 0, 0xe9}}), "CN=hé"},
		"t61-latin1":       {rawName(t, oidCN, asn1.RawValue{Tag: asn1.TagT61String, Bytes: []byte{'h', 0xe9}}), "CN=hé"},
		"not-a-string":     {rawName(t, oidX, asn1.RawValue{Tag: asn1.TagInteger, Bytes: []byte{5}}), "OID.1.2.3.4=#020105"},
		"multi-valued-rdn": {multi, "O=A + OU=B"},
		"empty-name":       {[]byte{0x30, 0}, ""},
		"garbage":          {[]byte{1, 2, 3}, ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := DistinguishedName(tc.raw); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSerialNumber(t *testing.T) {
	root, key, err := NewRootCA(Options{CommonName: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if got := SerialNumber(root); len(got) != 32 || got != strings.ToUpper(got) || got[0] < '4' || got[0] > '7' {
		t.Fatalf("random serial %q: want 16 bytes of upper hex, top bits 01", got)
	}
	for _, tc := range []struct {
		serial int64
		want   string
	}{
		{0x0A0B0C0D0E, "0A0B0C0D0E"}, // Azure's example keeps the leading zero digit
		{0x80, "0080"},               // DER adds a zero byte before a high bit
		{1, "01"},
	} {
		c, _, err := NewLeaf(Options{CommonName: "x", SerialNumber: big.NewInt(tc.serial)}, root, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := SerialNumber(c); got != tc.want {
			t.Errorf("serial %#x: got %q, want %q", tc.serial, got, tc.want)
		}
	}
}

// TestInfoMatchesOpenSSL compares Info with what openssl prints for the
// same certificates: one made here, one made by openssl itself.
func TestInfoMatchesOpenSSL(t *testing.T) {
	dir := t.TempDir()
	ch := newTestChain(t, "device-01")
	writeTestFile(t, dir, "ours.pem", EncodePEM(ch.leaf))
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "k.pem", "-out", "theirs.pem", "-days", "30", "-subj", "/C=US/O=MSR_TEST/CN=RIoT_COMMON_device")
	// A serial whose first byte has its high bit set, which openssl prints
	// without DER's leading zero byte.
	openssl(t, dir, "req", "-x509", "-key", "k.pem", "-set_serial", "0xDBA9FF3571190AC9",
		"-out", "theirs-high-bit.pem", "-days", "30", "-subj", "/CN=RIoT_COMMON_device")

	for _, file := range []string{"ours.pem", "theirs.pem", "theirs-high-bit.pem"} {
		t.Run(file, func(t *testing.T) {
			c, err := ParseCertificate(string(readTestFile(t, filepath.Join(dir, file))))
			if err != nil {
				t.Fatal(err)
			}
			info := Info(c)
			// sep_comma_plus_space without dn_rev prints attributes in
			// certificate order, as Azure does.
			out := openssl(t, dir, "x509", "-in", file, "-noout", "-nameopt", "sep_comma_plus_space,sname",
				"-fingerprint", "-sha1", "-serial", "-subject", "-issuer", "-dates")
			out256 := openssl(t, dir, "x509", "-in", file, "-noout", "-fingerprint", "-sha256")
			field := func(s, re string) string {
				m := regexp.MustCompile(`(?m)^` + re + `=(.*)$`).FindStringSubmatch(s)
				if m == nil {
					t.Fatalf("no %s in openssl output:\n%s", re, s)
				}
				return strings.TrimSpace(m[1])
			}
			noColons := func(s string) string { return strings.ReplaceAll(s, ":", "") }
			opensslTime := func(s string) time.Time {
				tm, err := time.Parse("Jan _2 15:04:05 2006 MST", s)
				if err != nil {
					t.Fatal(err)
				}
				return tm
			}
			checks := []struct{ name, got, want string }{
				{"sha1Thumbprint", info.SHA1Thumbprint, noColons(field(out, `(?i)sha1 Fingerprint`))},
				{"sha256Thumbprint", info.SHA256Thumbprint, noColons(field(out256, `(?i)sha256 Fingerprint`))},
				{"serialNumber", info.SerialNumber, derSerial(field(out, "serial"))},
				{"subjectName", info.SubjectName, field(out, "subject")},
				{"issuerName", info.IssuerName, field(out, "issuer")},
				{"notBeforeUtc", info.NotBeforeUtc.Time.Format(time.RFC3339), opensslTime(field(out, "notBefore")).UTC().Format(time.RFC3339)},
				{"notAfterUtc", info.NotAfterUtc.Time.Format(time.RFC3339), opensslTime(field(out, "notAfter")).UTC().Format(time.RFC3339)},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s: got %q, openssl says %q", c.name, c.got, c.want)
				}
			}
			if info.Version != 3 {
				t.Errorf("version %d, want 3", info.Version)
			}
		})
	}
}

// derSerial turns openssl's -serial digits into the INTEGER's encoded bytes,
// which SerialNumber prints: openssl drops the zero byte DER puts before a
// first byte with its high bit set (openssl's own random serials have it
// about once in 256 certificates).
func derSerial(s string) string {
	if len(s)%2 == 1 {
		s = "0" + s
	}
	if s != "" && strings.IndexByte("89ABCDEFabcdef", s[0]) >= 0 {
		s = "00" + s
	}
	return s
}

func TestDERSerial(t *testing.T) {
	for in, want := range map[string]string{"DBA9": "00DBA9", "7F01": "7F01", "ABC": "0ABC", "01": "01"} {
		if got := derSerial(in); got != want {
			t.Errorf("derSerial(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInfo(t *testing.T) {
	if Info(nil) != nil {
		t.Fatal("Info(nil) is not nil")
	}
	nb := time.Date(2017, 1, 1, 0, 0, 0, 0, time.UTC)
	na := time.Date(2037, 1, 1, 0, 0, 0, 0, time.UTC)
	root, key, err := NewRootCA(Options{Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"MSR_TEST"}}, CommonName: "RIoT_Signer_Core"})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := NewLeaf(Options{CommonName: "RIoT_COMMON_device", NotBefore: nb, NotAfter: na, SerialNumber: big.NewInt(0x0A0B0C0D0E)}, root, key)
	if err != nil {
		t.Fatal(err)
	}
	info := Info(c)
	if info.SubjectName != "CN=RIoT_COMMON_device" || info.IssuerName != "C=US, O=MSR_TEST, CN=RIoT_Signer_Core" {
		t.Errorf("names %q / %q", info.SubjectName, info.IssuerName)
	}
	if info.SerialNumber != "0A0B0C0D0E" || info.Version != 3 {
		t.Errorf("serial %q version %d", info.SerialNumber, info.Version)
	}
	if got := info.NotBeforeUtc.Format(); got != "2017-01-01T00:00:00.0000000Z" {
		t.Errorf("notBeforeUtc %s", got)
	}
	if !info.NotAfterUtc.Equal(na) {
		t.Errorf("notAfterUtc %s", info.NotAfterUtc.Format())
	}
	if len(info.SHA1Thumbprint) != 40 || len(info.SHA256Thumbprint) != 64 ||
		strings.ToUpper(info.SHA1Thumbprint) != info.SHA1Thumbprint {
		t.Errorf("thumbprints %q %q", info.SHA1Thumbprint, info.SHA256Thumbprint)
	}
	if DescribeKey(c.PublicKey) != "ECDSA P-256" {
		t.Errorf("DescribeKey: %s", DescribeKey(c.PublicKey))
	}
}
