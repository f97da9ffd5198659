package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	clienttpm "github.com/dpsd/dpsd/client/tpm"
	"github.com/dpsd/dpsd/internal/tpm"
)

// withUnique marshals template as a TPM2B_PUBLIC with a made-up key.
func withUnique(template tpm2.TPMTPublic, unique tpm2.TPMUPublicID) []byte {
	template.Unique = unique
	return tpm2.Marshal(tpm2.New2B(template))
}

func rsaKey(template tpm2.TPMTPublic, fill byte) []byte {
	return withUnique(template, tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: bytes.Repeat([]byte{fill}, 256)}))
}

func eccKey() []byte {
	return withUnique(tpm2.ECCEKTemplate, tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{1}, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{2}, 32)},
	}))
}

func mustParse(t *testing.T, b []byte) *tpm.Public {
	t.Helper()
	p, err := tpm.ParsePublic(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePublic(t *testing.T) {
	ek := rsaKey(clienttpm.EKTemplate(), 0xa5)
	p := mustParse(t, ek)
	if !bytes.Equal(p.Bytes(), ek) || p.Base64() != base64.StdEncoding.EncodeToString(ek) {
		t.Errorf("Bytes/Base64 do not give back the input")
	}
	// Name = nameAlg || SHA-256(TPMT_PUBLIC), as the TPM computes it.
	d := sha256.Sum256(ek[2:])
	if want := append([]byte{0x00, 0x0b}, d[:]...); !bytes.Equal(p.Name(), want) {
		t.Errorf("Name = %x, want %x", p.Name(), want)
	}
	if p.Algorithm() != "RSA-2048" {
		t.Errorf("Algorithm = %q", p.Algorithm())
	}
	// A bare TPMT_PUBLIC is the same key.
	if bare := mustParse(t, ek[2:]); !bare.Equal(p) {
		t.Error("the bare TPMT_PUBLIC is not the same key")
	}
	if e := mustParse(t, eccKey()); e.Algorithm() != "ECC-NIST-P256" {
		t.Errorf("ECC Algorithm = %q", e.Algorithm())
	}
}

func TestParsePublicRefuses(t *testing.T) {
	ek := rsaKey(clienttpm.EKTemplate(), 0xa5)
	sizeSays := func(b []byte, n int) []byte {
		b = bytes.Clone(b)
		b[0], b[1] = byte(n>>8), byte(n)
		return b
	}
	symCipher := tpm2.Marshal(tpm2.New2B(tpm2.TPMTPublic{
		Type: tpm2.TPMAlgSymCipher, NameAlg: tpm2.TPMAlgSHA256,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgSymCipher, &tpm2.TPMSSymCipherParms{Sym: tpm2.TPMTSymDefObject{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
		}}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgSymCipher, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)}),
	}))
	badNameAlg := bytes.Clone(ek)
	badNameAlg[4], badNameAlg[5] = 0x00, 0x99
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"one byte", []byte{1}, "1 bytes"},
		{"truncated", ek[:len(ek)-10], ""},
		{"size says more", sizeSays(ek, len(ek)), ""},
		{"trailing byte", append(bytes.Clone(ek), 0), ""},
		{"too large", make([]byte, tpm.MaxPublicSize+1), "more than"},
		{"symmetric cipher object", symCipher, "not RSA, ECC or keyed hash"},
		{"unknown name algorithm", badNameAlg, ""},
		{"zeros", make([]byte, 40), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := tpm.ParsePublic(c.in)
			if !errors.Is(err, tpm.ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ParsePublic = %v, want ErrMalformed mentioning %q", err, c.want)
			}
		})
	}
	for _, s := range []string{"not base64!", strings.Repeat("A", 2*tpm.MaxPublicSize+4)} {
		if _, err := tpm.ParsePublicBase64(s); !errors.Is(err, tpm.ErrMalformed) {
			t.Errorf("ParsePublicBase64(%.20q...) = %v", s, err)
		}
	}
}

func TestRegistrationID(t *testing.T) {
	// Computed independently: base32(sha256("abc")), lower case, no padding.
	if got, want := tpm.RegistrationID([]byte("abc")), "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq"; got != want {
		t.Errorf("RegistrationID = %q, want %q", got, want)
	}
	ek := rsaKey(clienttpm.EKTemplate(), 0xa5)
	if mustParse(t, ek).RegistrationID() != tpm.RegistrationID(ek) {
		t.Error("Public.RegistrationID differs from RegistrationID of its bytes")
	}
}

func TestSameEndorsementKey(t *testing.T) {
	ek := rsaKey(clienttpm.EKTemplate(), 0xa5)
	std := base64.StdEncoding.EncodeToString(ek)
	variants := []string{
		std,
		base64.RawStdEncoding.EncodeToString(ek),
		base64.URLEncoding.EncodeToString(ek),
		base64.StdEncoding.EncodeToString(ek[2:]), // bare TPMT_PUBLIC
		std[:40] + "\n" + std[40:] + "\n",
	}
	for _, v := range variants {
		if !tpm.SameEndorsementKey(std, v) {
			t.Errorf("%q is not the same EK as %q", v, std)
		}
		if c, err := tpm.CanonicalEndorsementKey(v); err != nil || c != std {
			t.Errorf("CanonicalEndorsementKey(%q) = %q, %v", v, c, err)
		}
	}
	other := base64.StdEncoding.EncodeToString(rsaKey(clienttpm.EKTemplate(), 0x5a))
	otherTemplate := base64.StdEncoding.EncodeToString(rsaKey(clienttpm.SRKTemplate(), 0xa5)) // same modulus, other attributes
	for _, v := range []string{other, otherTemplate, "", "AAAA", "%%%"} {
		if tpm.SameEndorsementKey(std, v) {
			t.Errorf("%q is the same EK as %q", v, std)
		}
	}
}

func TestActivationBlobRefusesKeys(t *testing.T) {
	ek := mustParse(t, rsaKey(clienttpm.EKTemplate(), 0xa5))
	srk := mustParse(t, rsaKey(clienttpm.SRKTemplate(), 0xa7))
	if _, err := tpm.ActivationBlob(ek, srk, tpm.NewKey()); err != nil {
		t.Fatalf("the Azure EK and SRK templates: %v", err)
	}
	signing := clienttpm.SRKTemplate()
	signing.ObjectAttributes.Decrypt, signing.ObjectAttributes.SignEncrypt = false, true
	noSym := clienttpm.SRKTemplate()
	rp, _ := noSym.Parameters.RSADetail()
	rp.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
	sha384 := clienttpm.EKTemplate()
	sha384.NameAlg = tpm2.TPMAlgSHA384
	cases := []struct {
		name     string
		ek, srk  *tpm.Public
		key      []byte
		want     string
		sentinel error
	}{
		{"ECC EK", mustParse(t, eccKey()), srk, tpm.NewKey(), "the endorsement key is an ECC-NIST-P256 key", tpm.ErrUnsupported},
		{"ECC SRK", ek, mustParse(t, eccKey()), tpm.NewKey(), "the storage root key is an ECC-NIST-P256 key", tpm.ErrUnsupported},
		{"signing SRK", ek, mustParse(t, rsaKey(signing, 1)), tpm.NewKey(), "not a restricted decryption", tpm.ErrUnsupported},
		{"SRK without symmetric algorithm", ek, mustParse(t, rsaKey(noSym, 1)), tpm.NewKey(), "not AES-128-CFB", tpm.ErrUnsupported},
		{"SHA-384 EK", mustParse(t, rsaKey(sha384, 1)), srk, tpm.NewKey(), "not SHA-256", tpm.ErrUnsupported},
		{"no SRK", ek, nil, tpm.NewKey(), "no storage root key", tpm.ErrUnsupported},
		{"SRK modulus even", ek, mustParse(t, rsaKey(clienttpm.SRKTemplate(), 0xa6)), tpm.NewKey(), "wrapping the key to the storage root key", tpm.ErrMalformed},
		{"EK modulus even", mustParse(t, rsaKey(clienttpm.EKTemplate(), 0xa6)), srk, tpm.NewKey(), "making the credential for the endorsement key", tpm.ErrMalformed},
		{"short key", ek, srk, make([]byte, tpm.MinKeySize-1), "give 16 to 64", nil},
		{"long key", ek, srk, make([]byte, tpm.MaxKeySize+1), "give 16 to 64", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			blob, err := tpm.ActivationBlob(c.ek, c.srk, c.key)
			if err == nil || !strings.Contains(err.Error(), c.want) || (c.sentinel != nil && !errors.Is(err, c.sentinel)) || blob != nil {
				t.Fatalf("ActivationBlob = %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}

func FuzzParsePublic(f *testing.F) {
	f.Add(rsaKey(clienttpm.EKTemplate(), 0xa5))
	f.Add(rsaKey(clienttpm.SRKTemplate(), 0xa5)[2:])
	f.Add(eccKey())
	f.Add([]byte{0, 2, 0, 8})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := tpm.ParsePublic(b)
		if err != nil {
			if !errors.Is(err, tpm.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What parses is canonical: it parses again to the same key.
		q, err := tpm.ParsePublic(p.Bytes())
		if err != nil || !q.Equal(p) || !bytes.Equal(q.Name(), p.Name()) {
			t.Fatalf("re-parsing %x: %v", p.Bytes(), err)
		}
		_ = p.Algorithm()
		_, _ = tpm.ActivationBlob(p, p, tpm.NewKey())
	})
}
