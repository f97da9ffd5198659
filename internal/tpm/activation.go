package tpm

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// KeySize is the size of the keys NewKey generates.
const KeySize = 32

// Key sizes ActivationBlob accepts: a TPM refuses an HMAC key longer than
// the hash's block size, and IoT Hub wants at least 16 bytes.
const (
	MinKeySize = 16
	MaxKeySize = 64
)

// innerKeySize is the size of the inner wrap key (AES-128).
const innerKeySize = 16

// NewKey returns a fresh random HMAC key of KeySize bytes.
func NewKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k)
	return k
}

// ActivationBlob wraps key so that only the TPM holding ek can import it,
// under srk: the six-item blob described in the package comment, base64 of
// which is the authenticationKey of the TPM challenge and of the
// registration state. ek and srk must be the RSA-2048 storage keys the
// device reported (AES-128-CFB, SHA-256 names); every other key is refused
// with an error wrapping ErrUnsupported (or ErrMalformed: an RSA key nothing
// can be encrypted to) that says why.
func ActivationBlob(ek, srk *Public, key []byte) ([]byte, error) {
	if err := checkStorageKey("endorsement key", ek); err != nil {
		return nil, err
	}
	if err := checkStorageKey("storage root key", srk); err != nil {
		return nil, err
	}
	if len(key) < MinKeySize || len(key) > MaxKeySize {
		return nil, fmt.Errorf("the key is %d bytes; give %d to %d", len(key), MinKeySize, MaxKeySize)
	}
	inner := make([]byte, innerKeySize)
	rand.Read(inner)

	pub, sensitive := hmacKeyObject(key)
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("naming the HMAC key: %w", err)
	}
	// What can fail below is encrypting to a public key that is not a valid
	// RSA key (an even modulus...): the device sent a malformed key.
	dup, seed, err := duplicate(srk, name.Buffer, inner, sensitive)
	if err != nil {
		return nil, fmt.Errorf("%w: wrapping the key to the storage root key: %v", ErrMalformed, err)
	}
	ekKey, err := tpm2.ImportEncapsulationKey(ek.pub)
	if err != nil {
		return nil, fmt.Errorf("%w: endorsement key: %v", ErrUnsupported, err)
	}
	idObject, secret, err := tpm2.CreateCredential(rand.Reader, ekKey, srk.name, inner)
	if err != nil {
		return nil, fmt.Errorf("%w: making the credential for the endorsement key: %v", ErrMalformed, err)
	}
	var blob []byte
	for _, item := range [][]byte{idObject, secret, dup, seed, tpm2.Marshal(pub)} {
		blob = append2B(blob, item)
	}
	return append2B(blob, nil), nil // the empty TPM2B_DATA
}

func append2B(b, item []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(item)))
	return append(b, item...)
}

// checkStorageKey accepts the RSA-2048 restricted decryption keys with
// AES-128-CFB and SHA-256 names that the Azure device clients create as EK
// and SRK; MakeCredential and the duplication below rely on those
// parameters.
func checkStorageKey(role string, p *Public) error {
	if p == nil {
		return fmt.Errorf("%w: no %s", ErrUnsupported, role)
	}
	const want = "TPM attestation needs an RSA-2048 key with AES-128-CFB and SHA-256, as the Azure device clients create"
	switch p.pub.Type {
	case tpm2.TPMAlgRSA:
	case tpm2.TPMAlgECC:
		return fmt.Errorf("%w: the %s is an %s key; %s", ErrUnsupported, role, p.Algorithm(), want)
	default:
		return fmt.Errorf("%w: the %s is a %s object, not a key; %s", ErrUnsupported, role, p.Algorithm(), want)
	}
	a := p.pub.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return fmt.Errorf("%w: the %s is not a restricted decryption (storage) key; %s", ErrUnsupported, role, want)
	}
	if p.pub.NameAlg != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("%w: the %s's name algorithm is %#04x, not SHA-256; %s", ErrUnsupported, role, uint16(p.pub.NameAlg), want)
	}
	d, err := p.pub.Parameters.RSADetail()
	if err != nil {
		return fmt.Errorf("%w: the %s has no RSA parameters", ErrMalformed, role)
	}
	if d.KeyBits != 2048 {
		return fmt.Errorf("%w: the %s is %s; %s", ErrUnsupported, role, p.Algorithm(), want)
	}
	if n, err := p.pub.Unique.RSA(); err != nil || len(n.Buffer) != 256 {
		return fmt.Errorf("%w: the %s's modulus is not 2048 bits", ErrMalformed, role)
	}
	sym := d.Symmetric
	bits, berr := sym.KeyBits.AES()
	mode, merr := sym.Mode.AES()
	if sym.Algorithm != tpm2.TPMAlgAES || berr != nil || merr != nil || *bits != 128 || *mode != tpm2.TPMAlgCFB {
		return fmt.Errorf("%w: the %s's symmetric algorithm is not AES-128-CFB; %s", ErrUnsupported, role, want)
	}
	return nil
}

// hmacKeyObject returns the public and sensitive areas of a TPM HMAC-SHA256
// key holding key, with an empty auth value, importable (not fixedTPM or
// fixedParent) and usable with a password session (userWithAuth).
func hmacKeyObject(key []byte) (*tpm2.TPMTPublic, *tpm2.TPMTSensitive) {
	seed := make([]byte, sha256.Size)
	rand.Read(seed)
	unique := sha256.Sum256(append(append([]byte(nil), seed...), key...))
	pub := &tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgKeyedHash,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
			Scheme: tpm2.TPMTKeyedHashScheme{
				Scheme:  tpm2.TPMAlgHMAC,
				Details: tpm2.NewTPMUSchemeKeyedHash(tpm2.TPMAlgHMAC, &tpm2.TPMSSchemeHMAC{HashAlg: tpm2.TPMAlgSHA256}),
			},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: unique[:]}),
	}
	sensitive := &tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgKeyedHash,
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BSensitiveData{Buffer: key}),
	}
	return pub, sensitive
}

// duplicate produces the TPM2_Import inputs for sensitive: the duplication
// blob (TPM2B_PRIVATE contents) and the encrypted seed of its outer wrap.
// The inner wrap (TPM 2.0 Part 1, "Inner Duplication Wrapper") is
// AES-128-CFB with a zero IV under innerKey over
// TPM2B_DIGEST(SHA-256(TPM2B_SENSITIVE || name)) || TPM2B_SENSITIVE. The
// outer wrap ("Outer Duplication Wrapper") encrypts that with a key derived
// from a seed sent RSA-OAEP encrypted to the SRK, under an HMAC over the
// ciphertext and the name. go-tpm's CreateDuplicate does the outer wrap only,
// so both are done here.
func duplicate(srk *Public, name, innerKey []byte, sensitive *tpm2.TPMTSensitive) (dup, encSeed []byte, err error) {
	sens := append2B(nil, tpm2.Marshal(sensitive))
	integrity := sha256.New()
	integrity.Write(sens)
	integrity.Write(name)
	plain := append2B(nil, integrity.Sum(nil))
	plain = append(plain, sens...)
	encInner, err := cfb(innerKey, plain)
	if err != nil {
		return nil, nil, err
	}

	srkKey, err := tpm2.ImportEncapsulationKey(srk.pub)
	if err != nil {
		return nil, nil, err
	}
	seed, encSeed, err := srkKey.Encapsulate(rand.Reader, "DUPLICATE")
	if err != nil {
		return nil, nil, err
	}
	// checkStorageKey fixed the SRK's parameters: SHA-256 names, AES-128.
	symKey := tpm2.KDFa(crypto.SHA256, seed, "STORAGE", name, nil, 128)
	dupSensitive, err := cfb(symKey, encInner)
	if err != nil {
		return nil, nil, err
	}
	mac := hmac.New(sha256.New, tpm2.KDFa(crypto.SHA256, seed, "INTEGRITY", nil, nil, sha256.Size*8))
	mac.Write(dupSensitive)
	mac.Write(name)
	dup = append2B(nil, mac.Sum(nil))
	return append(dup, dupSensitive...), encSeed, nil
}

// cfb encrypts with AES in CFB mode and a zero IV, as the TPM's wraps do.
func cfb(key, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(plain))
	//lint:ignore SA1019 the TPM's duplication and credential wraps are CFB (integrity comes from their HMACs)
	cipher.NewCFBEncrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(out, plain)
	return out, nil
}
