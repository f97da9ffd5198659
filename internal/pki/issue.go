package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// DefaultDays is the validity of a certificate whose Options give none.
const DefaultDays = 365

// VerificationDays is the validity of a verification certificate; it is used
// once, right away.
const VerificationDays = 30

// backdate moves the default NotBefore a little into the past, so a device
// or server whose clock is slightly behind accepts a certificate made just
// now.
const backdate = time.Minute

// Options describe a certificate to issue. The zero value of every field
// means "the default for this kind of certificate"; tests set fields to build
// deliberately odd certificates (expired, not yet valid, wrong usage, a CA
// without CA:TRUE, a SHA-1 signature).
type Options struct {
	// CommonName is the subject CN; for a device certificate it is the
	// registration ID. When set it replaces Subject.CommonName.
	CommonName string
	// Subject holds further subject attributes (O, OU, C, ...).
	Subject pkix.Name

	// Days is the validity period in days (default DefaultDays). It is
	// counted from NotBefore, or back from NotAfter when only that is set.
	Days int
	// NotBefore and NotAfter set the validity explicitly. When both are
	// zero the certificate is valid from a minute ago for Days days.
	NotBefore, NotAfter time.Time

	// Key is the subject's private key; when nil a key of KeyType (default
	// DefaultKeyType) is generated and returned.
	Key     crypto.Signer
	KeyType KeyType
	// PublicKey, when set, is the subject's public key whose private key is
	// elsewhere (a certificate issued for a certificate signing request):
	// no key is generated or returned. It excludes Key and self-signing.
	PublicKey crypto.PublicKey

	// Hosts are host names and IP addresses for the subject alternative
	// name; each is put in DNSNames or IPAddresses by its form.
	Hosts       []string
	DNSNames    []string
	IPAddresses []net.IP

	// ExtKeyUsage, when not nil, is the exact extended key usage list; an
	// empty non-nil slice leaves the extension out. When nil, leaves get
	// clientAuth and CAs get none.
	ExtKeyUsage []x509.ExtKeyUsage
	// KeyUsage, when not zero, replaces the default key usage
	// (CertSign|CRLSign for CAs; DigitalSignature, plus KeyEncipherment for
	// RSA keys, for leaves).
	KeyUsage x509.KeyUsage
	// IsCA, when not nil, overrides the basic constraint CA flag of the
	// kind of certificate (e.g. new(false) for an intermediate that is
	// not a CA).
	IsCA *bool
	// MaxPathLen, when not nil, sets the CA path length constraint
	// (new(0): the CA may sign only leaves).
	MaxPathLen *int

	// SignatureAlgorithm, when not zero, is the signature algorithm to use
	// (x509.SHA1WithRSA makes a SHA-1 certificate for tests); by default
	// Go picks SHA-256 with RSA or ECDSA-SHA256 for P-256.
	SignatureAlgorithm x509.SignatureAlgorithm
	// SerialNumber, when not nil, replaces the random serial number.
	SerialNumber *big.Int
	// CRLDistributionPoints are URLs where the issuer's CRL is published.
	CRLDistributionPoints []string
}

type certKind int

const (
	kindCA certKind = iota
	kindLeaf
)

// NewRootCA makes a self-signed root CA certificate: CA:TRUE, key usage
// certificate and CRL signing. It returns the certificate and its key.
func NewRootCA(opts Options) (*x509.Certificate, crypto.Signer, error) {
	return issue(kindCA, opts, nil, nil)
}

// NewIntermediateCA makes a CA certificate signed by parent, whose private
// key is parentKey.
func NewIntermediateCA(opts Options, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	if err := checkParent(parent, parentKey); err != nil {
		return nil, nil, err
	}
	return issue(kindCA, opts, parent, parentKey)
}

// NewLeaf makes an end-entity certificate (CA:FALSE) signed by ca. By default
// it is a device certificate with the clientAuth extended key usage; a server
// certificate sets ExtKeyUsage to serverAuth and Hosts, e.g. to
// ServerHosts("dps.example.com").
func NewLeaf(opts Options, ca *x509.Certificate, caKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	if err := checkParent(ca, caKey); err != nil {
		return nil, nil, err
	}
	return issue(kindLeaf, opts, ca, caKey)
}

// NewSelfSigned makes a self-signed device certificate like the openssl
// command of Azure's X.509-over-HTTPS walkthrough: CA:FALSE, clientAuth,
// issuer = subject.
func NewSelfSigned(opts Options) (*x509.Certificate, crypto.Signer, error) {
	return issue(kindLeaf, opts, nil, nil)
}

// NewVerificationCert makes the proof-of-possession certificate for a CA:
// subject CN = code, signed by the CA's key, valid VerificationDays days. Its
// own key is generated and thrown away; nothing uses it.
func NewVerificationCert(code string, ca *x509.Certificate, caKey crypto.Signer) (*x509.Certificate, error) {
	if code == "" {
		return nil, errors.New("verification code is empty")
	}
	if err := checkParent(ca, caKey); err != nil {
		return nil, err
	}
	c, _, err := issue(kindLeaf, Options{CommonName: code, Days: VerificationDays}, ca, caKey)
	return c, err
}

// ServerHosts returns the names a local dpsd server certificate covers:
// localhost, 127.0.0.1 and ::1, then extra (duplicates dropped).
func ServerHosts(extra ...string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, h := range extra {
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func checkParent(parent *x509.Certificate, key crypto.Signer) error {
	if parent == nil {
		return errors.New("no issuing CA certificate")
	}
	if key == nil {
		return errors.New("no issuing CA private key")
	}
	if !KeyMatches(key, parent.PublicKey) {
		return fmt.Errorf("the CA private key does not belong to the CA certificate %q", DistinguishedName(parent.RawSubject))
	}
	return nil
}

func issue(kind certKind, opts Options, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	subject := opts.Subject
	if opts.CommonName != "" {
		subject.CommonName = opts.CommonName
	}
	if len(subject.ToRDNSequence()) == 0 {
		return nil, nil, errors.New("common name is empty")
	}
	notBefore, notAfter, err := validity(opts)
	if err != nil {
		return nil, nil, err
	}
	key, pub := opts.Key, opts.PublicKey
	switch {
	case pub != nil && (key != nil || parent == nil):
		return nil, nil, errors.New("a public key without its private key needs an issuer, and no Key")
	case pub == nil && key == nil:
		if key, err = GenerateKey(opts.KeyType); err != nil {
			return nil, nil, err
		}
		fallthrough
	case pub == nil:
		pub = key.Public()
	}
	serial := opts.SerialNumber
	if serial == nil {
		if serial, err = randomSerial(); err != nil {
			return nil, nil, err
		}
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, nil, err
	}

	isCA := kind == kindCA
	if opts.IsCA != nil {
		isCA = *opts.IsCA
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		MaxPathLen:            -1,
		SubjectKeyId:          skid,
		DNSNames:              slices.Clone(opts.DNSNames),
		IPAddresses:           slices.Clone(opts.IPAddresses),
		SignatureAlgorithm:    opts.SignatureAlgorithm,
		CRLDistributionPoints: slices.Clone(opts.CRLDistributionPoints),
	}
	if opts.MaxPathLen != nil {
		if *opts.MaxPathLen < 0 {
			return nil, nil, errors.New("path length is negative")
		}
		tmpl.MaxPathLen = *opts.MaxPathLen
		tmpl.MaxPathLenZero = *opts.MaxPathLen == 0
	}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	switch {
	case opts.KeyUsage != 0:
		tmpl.KeyUsage = opts.KeyUsage
	case kind == kindCA:
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	default:
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if _, ok := pub.(*rsa.PublicKey); ok {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
	}
	switch {
	case opts.ExtKeyUsage != nil:
		tmpl.ExtKeyUsage = slices.Clone(opts.ExtKeyUsage)
	case kind == kindLeaf:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}

	signer := parentKey
	if parent == nil {
		// Self-signed: Go leaves out the authority key ID unless the
		// template has one; OpenSSL writes it, so do the same.
		parent, signer = tmpl, key
		tmpl.AuthorityKeyId = skid
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("creating certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the new certificate: %w", err)
	}
	return c, key, nil
}

func validity(opts Options) (notBefore, notAfter time.Time, err error) {
	days := opts.Days
	if days < 0 {
		return notBefore, notAfter, fmt.Errorf("validity of %d days is negative", days)
	}
	if days == 0 {
		days = DefaultDays
	}
	period := time.Duration(days) * 24 * time.Hour
	notBefore, notAfter = opts.NotBefore, opts.NotAfter
	switch {
	case notBefore.IsZero() && notAfter.IsZero():
		now := time.Now().Truncate(time.Second)
		notBefore, notAfter = now.Add(-backdate), now.Add(period)
	case notAfter.IsZero():
		notAfter = notBefore.Add(period)
	case notBefore.IsZero():
		notBefore = notAfter.Add(-period)
	}
	if !notAfter.After(notBefore) {
		return notBefore, notAfter, fmt.Errorf("NotAfter %s is not after NotBefore %s", notAfter.UTC().Format(time.RFC3339), notBefore.UTC().Format(time.RFC3339))
	}
	return notBefore, notAfter, nil
}

// randomSerial returns a positive 128-bit serial number. The top bit is
// cleared and the next one set, so the DER INTEGER is always 16 bytes with no
// leading zero byte: Azure's serial rendering, OpenSSL's and ours then agree.
// That leaves 126 random bits, far above the 64 that RFC 5280 profiles ask
// for.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] = b[0]&0x7f | 0x40
	return new(big.Int).SetBytes(b), nil
}

// subjectKeyID is the SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2
// method 1), the key identifier OpenSSL computes, so certificates made here
// and by openssl for the same key carry the same identifier.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}
