// Package tpm is the service side of TPM attestation: it decodes the public
// areas a device sends (the endorsement key, EK, and the storage root key,
// SRK, each a marshalled TPM2B_PUBLIC in base64), derives a TPM device's
// default registration ID, compares endorsement keys, and builds the
// activation blob that only the TPM holding the EK can open.
//
// The activation blob (docs/protocol.md, "TPM attestation") is the challenge
// of the TPM flow and also carries the device's IoT hub key at assignment. It is the concatenation of six TPM 2.0
// marshalled items, in the order the Azure device clients unmarshal them:
//
//  1. TPM2B_ID_OBJECT and 2. TPM2B_ENCRYPTED_SECRET: TPM2_MakeCredential
//     against the EK (label "IDENTITY"), the credential being a fresh 16-byte
//     AES key (the inner wrap key) bound to the Name of the SRK;
//  3. TPM2B_PRIVATE: a duplication blob of an HMAC-SHA256 key, inner-wrapped
//     with AES-128-CFB under the inner wrap key and outer-wrapped to the SRK;
//  4. TPM2B_ENCRYPTED_SECRET: the outer wrap's seed, RSA-OAEP encrypted to
//     the SRK (label "DUPLICATE");
//  5. TPM2B_PUBLIC: the HMAC key's public area;
//  6. TPM2B_DATA: empty, but present — the Node and C clients read six items
//     and reject a blob without it.
//
// The device runs TPM2_ActivateCredential (SRK, EK) to recover the inner
// key, TPM2_Import under the SRK with it, TPM2_Load, and then signs its SAS
// tokens with TPM2_HMAC; the service verifies them with the plain key.
//
// Everything here is pure Go (github.com/google/go-tpm structures and
// MakeCredential); no TPM is needed on the server.
package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// MaxPublicSize caps a marshalled TPM2B_PUBLIC. An RSA-4096 public area with
// a SHA-512 policy is under 700 bytes.
const MaxPublicSize = 2048

var (
	// ErrMalformed is wrapped by every error about bytes that are not a
	// valid public area (or not base64).
	ErrMalformed = errors.New("malformed TPM public key")
	// ErrUnsupported is wrapped by the errors about well-formed keys that
	// cannot be used for the activation (ECC endorsement keys, other
	// symmetric algorithms, signing keys...).
	ErrUnsupported = errors.New("unsupported TPM key")
)

// Public is a decoded TPM 2.0 public area (TPMT_PUBLIC).
type Public struct {
	raw  []byte // canonical TPM2B_PUBLIC: size, then TPMT_PUBLIC
	pub  *tpm2.TPMTPublic
	name []byte
}

// ParsePublicBase64 decodes a base64 public key as devices and enrollments
// carry it: standard or URL-safe alphabet, with or without padding,
// whitespace ignored.
func ParsePublicBase64(s string) (*Public, error) {
	if len(s) > 2*MaxPublicSize {
		return nil, fmt.Errorf("%w: %d characters, more than a public area takes", ErrMalformed, len(s))
	}
	b, err := decodeBase64(s)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrMalformed)
	}
	return ParsePublic(b)
}

// ParsePublic decodes a marshalled TPM2B_PUBLIC (as the TPM returns it from
// TPM2_ReadPublic). A bare TPMT_PUBLIC, without the size prefix, is accepted
// too. The structure must be complete and canonical: re-marshalling it gives
// the same bytes, so its Name is the Name the TPM computes.
func ParsePublic(b []byte) (*Public, error) {
	if len(b) > MaxPublicSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d a public area can take", ErrMalformed, len(b), MaxPublicSize)
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	body := b
	if int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		body = b[2:]
	}
	pub, err := unmarshalPublic(body)
	if err != nil {
		return nil, err
	}
	if err := checkShape(pub); err != nil {
		return nil, err
	}
	nameHash, _ := pub.NameAlg.Hash() // checked by checkShape
	h := nameHash.New()
	h.Write(body)
	name := binary.BigEndian.AppendUint16(nil, uint16(pub.NameAlg))
	raw := binary.BigEndian.AppendUint16(make([]byte, 0, len(body)+2), uint16(len(body)))
	return &Public{raw: append(raw, body...), pub: pub, name: h.Sum(name)}, nil
}

// unmarshalPublic decodes a TPMT_PUBLIC and insists that it is all of body
// and marshals back to it. go-tpm's reflection decoder reports most damage
// as errors; the recover keeps a panic in it from reaching the caller.
func unmarshalPublic(body []byte) (pub *tpm2.TPMTPublic, err error) {
	defer func() {
		if r := recover(); r != nil {
			pub, err = nil, fmt.Errorf("%w: undecodable public area", ErrMalformed)
		}
	}()
	pub, err = tpm2.Unmarshal[tpm2.TPMTPublic](body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), body) {
		return nil, fmt.Errorf("%w: trailing or non-canonical bytes in the public area", ErrMalformed)
	}
	return pub, nil
}

// checkShape accepts the object types a device may send (RSA, ECC, keyed
// hash) with a name algorithm whose hash is available.
func checkShape(pub *tpm2.TPMTPublic) error {
	switch pub.Type {
	case tpm2.TPMAlgRSA, tpm2.TPMAlgECC, tpm2.TPMAlgKeyedHash:
	default:
		return fmt.Errorf("%w: object type %#04x is not RSA, ECC or keyed hash", ErrMalformed, uint16(pub.Type))
	}
	h, err := pub.NameAlg.Hash()
	if err != nil || !h.Available() {
		return fmt.Errorf("%w: name algorithm %#04x is not a known hash", ErrMalformed, uint16(pub.NameAlg))
	}
	return nil
}

// Bytes returns the canonical TPM2B_PUBLIC (size prefix included).
func (p *Public) Bytes() []byte { return bytes.Clone(p.raw) }

// Base64 returns Bytes in standard base64, the form devices send.
func (p *Public) Base64() string { return base64.StdEncoding.EncodeToString(p.raw) }

// Name returns the TPM Name of the object: nameAlg, then the digest of the
// marshalled TPMT_PUBLIC.
func (p *Public) Name() []byte { return bytes.Clone(p.name) }

// Equal reports whether p and q are the same public area.
func (p *Public) Equal(q *Public) bool { return q != nil && bytes.Equal(p.raw, q.raw) }

// RegistrationID returns the registration ID a TPM device uses when none is
// configured, computed over p as an endorsement key (see RegistrationID).
func (p *Public) RegistrationID() string { return RegistrationID(p.raw) }

// Algorithm describes the key for messages: "RSA-2048", "ECC-NIST-P256",
// "keyed hash".
func (p *Public) Algorithm() string {
	switch p.pub.Type {
	case tpm2.TPMAlgRSA:
		if d, err := p.pub.Parameters.RSADetail(); err == nil {
			return fmt.Sprintf("RSA-%d", d.KeyBits)
		}
		return "RSA"
	case tpm2.TPMAlgECC:
		if d, err := p.pub.Parameters.ECCDetail(); err == nil {
			return "ECC-" + curveName(d.CurveID)
		}
		return "ECC"
	default:
		return "keyed hash"
	}
}

func curveName(c tpm2.TPMECCCurve) string {
	switch c {
	case tpm2.TPMECCNistP256:
		return "NIST-P256"
	case tpm2.TPMECCNistP384:
		return "NIST-P384"
	case tpm2.TPMECCNistP521:
		return "NIST-P521"
	}
	return fmt.Sprintf("curve-%#04x", uint16(c))
}

// RegistrationID is the registration ID of a TPM device that has none
// configured: the SHA-256 digest of its endorsement key (the TPM2B_PUBLIC
// bytes it sends), in lower-case RFC 4648 base32 without padding. The Azure
// device clients derive it the same way.
func RegistrationID(ek []byte) string {
	d := sha256.Sum256(ek)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(d[:]))
}

// CanonicalEndorsementKey returns the standard base64 of the canonical
// TPM2B_PUBLIC of an endorsement key given in any form ParsePublicBase64
// accepts. Two keys are the same TPM's EK when their canonical forms are
// equal; store this form so that lookups can compare strings.
func CanonicalEndorsementKey(s string) (string, error) {
	p, err := ParsePublicBase64(s)
	if err != nil {
		return "", err
	}
	return p.Base64(), nil
}

// SameEndorsementKey reports whether a and b (base64, any accepted form)
// are the same public area. Undecodable keys are never the same.
func SameEndorsementKey(a, b string) bool {
	pa, err := ParsePublicBase64(a)
	if err != nil {
		return false
	}
	pb, err := ParsePublicBase64(b)
	return err == nil && pa.Equal(pb)
}

func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		case '-':
			return '+'
		case '_':
			return '/'
		}
		return r
	}, s)
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
