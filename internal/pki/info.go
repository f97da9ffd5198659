package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/dpsd/dpsd/internal/dps"
)

// Info describes c the way DPS does in X509CertificateInfo. Names are
// rendered by DistinguishedName, thumbprints and the serial number as
// upper-case hex without separators, dates in UTC.
func Info(c *x509.Certificate) *dps.X509CertificateInfo {
	if c == nil {
		return nil
	}
	return &dps.X509CertificateInfo{
		SubjectName:      DistinguishedName(c.RawSubject),
		SHA1Thumbprint:   SHA1Thumbprint(c),
		SHA256Thumbprint: SHA256Thumbprint(c),
		IssuerName:       DistinguishedName(c.RawIssuer),
		NotBeforeUtc:     dps.NewTime(c.NotBefore),
		NotAfterUtc:      dps.NewTime(c.NotAfter),
		SerialNumber:     SerialNumber(c),
		Version:          c.Version,
	}
}

// SHA1Thumbprint returns the SHA-1 hash of the certificate's DER encoding in
// upper-case hex, the thumbprint Azure shows and matches enrollments on.
func SHA1Thumbprint(c *x509.Certificate) string {
	sum := sha1.Sum(c.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// SHA256Thumbprint returns the SHA-256 hash of the certificate's DER encoding
// in upper-case hex.
func SHA256Thumbprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// SerialNumber returns the serial number in upper-case hex: the bytes of the
// INTEGER exactly as encoded, like .NET's X509Certificate2.SerialNumber (and
// Azure's "0A0B0C0D0E"). It differs from `openssl x509 -serial` only for a
// serial whose first byte has the high bit set, where the encoding carries a
// leading 00 that OpenSSL does not print.
func SerialNumber(c *x509.Certificate) string {
	if raw := rawSerial(c.RawTBSCertificate); raw != nil {
		return strings.ToUpper(hex.EncodeToString(raw))
	}
	if c.SerialNumber == nil {
		return ""
	}
	// Rebuild the minimal two's-complement encoding from the parsed value.
	b := c.SerialNumber.Bytes()
	if c.SerialNumber.Sign() >= 0 && (len(b) == 0 || b[0]&0x80 != 0) {
		b = append([]byte{0}, b...)
	}
	return strings.ToUpper(hex.EncodeToString(b))
}

// rawSerial returns the content bytes of the serialNumber INTEGER of a
// TBSCertificate, or nil.
func rawSerial(tbs []byte) []byte {
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(tbs, &seq); err != nil || seq.Tag != asn1.TagSequence {
		return nil
	}
	rest := seq.Bytes
	for range 2 {
		var v asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &v); err != nil {
			return nil
		}
		if v.Class == asn1.ClassUniversal && v.Tag == asn1.TagInteger {
			return v.Bytes
		}
		// The first element may be the [0] EXPLICIT version; skip it.
	}
	return nil
}

// DistinguishedName renders a DER-encoded X.501 name (a certificate's
// RawSubject or RawIssuer) the way Azure DPS prints subjectName and
// issuerName: attributes in the order they are encoded in the certificate,
// separated by ", ", with the short names of .NET/Windows (CN, O, OU, L, S,
// C, E, DC, STREET, T, G, I, SN, SERIALNUMBER; OID.n.n.n for others). Azure's
// own example "CN=RIoT_COMMON_device, C=US, O=MSR_TEST" is of a RIoT
// certificate whose subject is encoded CN, C, O, which shows that Azure does
// not reverse the order as RFC 4514 (and Go's pkix.Name.String) does. Values
// containing a separator or quote character are wrapped in double quotes,
// with inner quotes doubled, as Windows does; attributes of one
// multi-valued RDN are joined by " + ".
func DistinguishedName(raw []byte) string {
	var rdns []attributeSET
	rest, err := asn1.Unmarshal(raw, &rdns)
	if err != nil || len(rest) != 0 {
		return ""
	}
	var b strings.Builder
	for i, rdn := range rdns {
		if i > 0 {
			b.WriteString(", ")
		}
		for j, atv := range rdn {
			if j > 0 {
				b.WriteString(" + ")
			}
			b.WriteString(attributeName(atv.Type))
			b.WriteByte('=')
			if v, ok := attributeString(atv.Value); ok {
				b.WriteString(quoteValue(v))
			} else {
				// RFC 4514's form for a value that is not a string.
				b.WriteString("#" + strings.ToUpper(hex.EncodeToString(atv.Value.FullBytes)))
			}
		}
	}
	return b.String()
}

// attributeSET is a RelativeDistinguishedName; encoding/asn1 decodes a slice
// type whose name ends in SET as a SET OF.
type attributeSET []attributeTypeAndValue

type attributeTypeAndValue struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

var attributeNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "SERIALNUMBER",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "S",
	"2.5.4.9":                    "STREET",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "T",
	"2.5.4.42":                   "G",
	"2.5.4.43":                   "I",
	"1.2.840.113549.1.9.1":       "E",
	"0.9.2342.19200300.100.1.25": "DC",
}

func attributeName(oid asn1.ObjectIdentifier) string {
	s := oid.String()
	if n, ok := attributeNames[s]; ok {
		return n
	}
	return "OID." + s
}

// attributeString decodes the string types found in names.
func attributeString(v asn1.RawValue) (string, bool) {
	if v.Class == asn1.ClassUniversal && !v.IsCompound {
		switch v.Tag {
		case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String,
			asn1.TagNumericString, 26 /* VisibleString */ :
			if utf8.Valid(v.Bytes) {
				return string(v.Bytes), true
			}
		case asn1.TagT61String:
			// Treated as Latin-1, as most decoders do.
			r := make([]rune, len(v.Bytes))
			for i, c := range v.Bytes {
				r[i] = rune(c)
			}
			return string(r), true
		case asn1.TagBMPString:
			if len(v.Bytes)%2 == 0 {
				u := make([]uint16, len(v.Bytes)/2)
				for i := range u {
					u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
				}
				return string(utf16.Decode(u)), true
			}
		case 28: // UniversalString, UTF-32BE
			if len(v.Bytes)%4 == 0 {
				r := make([]rune, len(v.Bytes)/4)
				for i := range r {
					b := v.Bytes[4*i:]
					r[i] = rune(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
				}
				return string(r), true
			}
		}
	}
	return "", false
}

func quoteValue(s string) string {
	if s != "" && !strings.ContainsAny(s, ",+=\"\r\n<>#;") &&
		s[0] != ' ' && s[len(s)-1] != ' ' {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// DescribeKey names a public key's algorithm and size, e.g. "ECDSA P-256" or
// "RSA 4096".
func DescribeKey(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		if k.Curve == nil {
			return "ECDSA"
		}
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}
