package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
)

// PKCS#8 encryption (RFC 5958 EncryptedPrivateKeyInfo) with PKCS#5 v2 PBES2
// (RFC 8018), the scheme OpenSSL 3 uses for pass-phrase protected keys.

// defaultIterations is the PBKDF2 count MarshalPrivateKeyPEM writes: fifty
// times OpenSSL's default of 2048, yet quick enough (about 20 ms) that
// servers and tests can decrypt keys often.
const defaultIterations = 100_000

// maxIterations bounds the PBKDF2 count accepted when reading, so a crafted
// file cannot make the reader spin for minutes.
const maxIterations = 10_000_000

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidPKCS5      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5}
	oidPKCS12PBE  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1}
)

type encryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData []byte
}

type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt       asn1.RawValue // CHOICE; only the OCTET STRING form is in use
	Iterations int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

// pbkdf2ParamsOut is pbkdf2Params as written: salt as OCTET STRING, no key
// length (the cipher implies it), explicit PRF.
type pbkdf2ParamsOut struct {
	Salt       []byte
	Iterations int
	PRF        pkix.AlgorithmIdentifier
}

type pbeCipher struct {
	name    string
	keyLen  int
	ivLen   int
	newFunc func(key []byte) (cipher.Block, error)
}

var pbeCiphers = []struct {
	oid asn1.ObjectIdentifier
	c   pbeCipher
}{
	{oidAES128CBC, pbeCipher{"AES-128-CBC", 16, aes.BlockSize, aes.NewCipher}},
	{oidAES192CBC, pbeCipher{"AES-192-CBC", 24, aes.BlockSize, aes.NewCipher}},
	{oidAES256CBC, pbeCipher{"AES-256-CBC", 32, aes.BlockSize, aes.NewCipher}},
	{oidDESEDE3CBC, pbeCipher{"DES-EDE3-CBC", 24, des.BlockSize, des.NewTripleDESCipher}},
}

var pbePRFs = []struct {
	oid asn1.ObjectIdentifier
	h   func() hash.Hash
}{
	{oidHMACSHA1, sha1.New},
	{oidHMACSHA224, sha256.New224},
	{oidHMACSHA256, sha256.New},
	{oidHMACSHA384, sha512.New384},
	{oidHMACSHA512, sha512.New},
}

// encryptPKCS8 wraps a PKCS#8 DER key in an EncryptedPrivateKeyInfo with
// PBES2, PBKDF2-HMAC-SHA256 and AES-256-CBC.
func encryptPKCS8(plain, passphrase []byte, iterations int) ([]byte, error) {
	salt := make([]byte, 16)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	key, err := pbkdf2.Key(sha256.New, string(passphrase), salt, iterations, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	data := pad(plain, aes.BlockSize)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(data, data)

	kdfParams, err := asn1.Marshal(pbkdf2ParamsOut{
		Salt:       salt,
		Iterations: iterations,
		PRF:        pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256, Parameters: asn1.NullRawValue},
	})
	if err != nil {
		return nil, err
	}
	ivParam, err := asn1.Marshal(iv)
	if err != nil {
		return nil, err
	}
	params, err := asn1.Marshal(pbes2Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: kdfParams}},
		EncryptionScheme:  pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivParam}},
	})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(encryptedPrivateKeyInfo{
		Algorithm:     pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}},
		EncryptedData: data,
	})
}

func isEncryptedPKCS8(der []byte) bool {
	var info encryptedPrivateKeyInfo
	rest, err := asn1.Unmarshal(der, &info)
	return err == nil && len(rest) == 0
}

var errMalformedEncrypted = errors.New("malformed encrypted private key")

// decryptPKCS8 returns the PKCS#8 DER inside an EncryptedPrivateKeyInfo.
func decryptPKCS8(der, passphrase []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return nil, errMalformedEncrypted
	}
	alg := info.Algorithm.Algorithm
	if !alg.Equal(oidPBES2) {
		if len(alg) > len(oidPKCS5) && alg[:len(oidPKCS5)].Equal(oidPKCS5) ||
			len(alg) > len(oidPKCS12PBE) && alg[:len(oidPKCS12PBE)].Equal(oidPKCS12PBE) {
			return nil, fmt.Errorf("private key is encrypted with the legacy scheme %s; convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`", alg)
		}
		return nil, fmt.Errorf("private key is encrypted with unsupported scheme %s", alg)
	}
	if len(passphrase) == 0 {
		return nil, ErrPassphraseRequired
	}
	var params pbes2Params
	if rest, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil || len(rest) != 0 {
		return nil, errMalformedEncrypted
	}
	if !params.KeyDerivationFunc.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("private key uses unsupported key derivation %s; only PBKDF2 is supported", params.KeyDerivationFunc.Algorithm)
	}
	var kdf pbkdf2Params
	if rest, err := asn1.Unmarshal(params.KeyDerivationFunc.Parameters.FullBytes, &kdf); err != nil || len(rest) != 0 {
		return nil, errMalformedEncrypted
	}
	if kdf.Salt.Class != asn1.ClassUniversal || kdf.Salt.Tag != asn1.TagOctetString || kdf.Salt.IsCompound {
		return nil, errors.New("private key uses an unsupported PBKDF2 salt source")
	}
	if kdf.Iterations < 1 || kdf.Iterations > maxIterations {
		return nil, fmt.Errorf("private key uses %d PBKDF2 iterations; at most %d are accepted", kdf.Iterations, maxIterations)
	}
	prf := sha1.New // the default of RFC 8018
	if len(kdf.PRF.Algorithm) > 0 {
		prf = nil
		for _, p := range pbePRFs {
			if kdf.PRF.Algorithm.Equal(p.oid) {
				prf = p.h
			}
		}
		if prf == nil {
			return nil, fmt.Errorf("private key uses unsupported PBKDF2 function %s", kdf.PRF.Algorithm)
		}
	}
	var c *pbeCipher
	for i := range pbeCiphers {
		if params.EncryptionScheme.Algorithm.Equal(pbeCiphers[i].oid) {
			c = &pbeCiphers[i].c
		}
	}
	if c == nil {
		return nil, fmt.Errorf("private key uses unsupported cipher %s; AES-CBC and DES-EDE3-CBC are supported", params.EncryptionScheme.Algorithm)
	}
	if kdf.KeyLength != 0 && kdf.KeyLength != c.keyLen {
		return nil, errMalformedEncrypted
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 || len(iv) != c.ivLen {
		return nil, errMalformedEncrypted
	}
	data := info.EncryptedData
	if len(data) == 0 || len(data)%c.ivLen != 0 {
		return nil, errMalformedEncrypted
	}
	key, err := pbkdf2.Key(prf, string(passphrase), kdf.Salt.Bytes, kdf.Iterations, c.keyLen)
	if err != nil {
		return nil, err
	}
	return decryptCBC(c, key, iv, data)
}

// decryptCBC decrypts and unpads; bad padding means a wrong passphrase.
func decryptCBC(c *pbeCipher, key, iv, data []byte) ([]byte, error) {
	block, err := c.newFunc(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	plain, ok := unpad(out, block.BlockSize())
	if !ok {
		return nil, ErrWrongPassphrase
	}
	return plain, nil
}

// pad applies PKCS#7 padding into a new slice.
func pad(b []byte, size int) []byte {
	n := size - len(b)%size
	out := make([]byte, len(b)+n)
	copy(out, b)
	for i := len(b); i < len(out); i++ {
		out[i] = byte(n)
	}
	return out
}

func unpad(b []byte, size int) ([]byte, bool) {
	if len(b) == 0 || len(b)%size != 0 {
		return nil, false
	}
	n := int(b[len(b)-1])
	if n == 0 || n > size {
		return nil, false
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, false
		}
	}
	return b[:len(b)-n], true
}
