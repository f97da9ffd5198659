package pki

import (
	"crypto/aes"
	"crypto/des"
	"crypto/md5"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Legacy PEM encryption (RFC 1423 style, "Proc-Type: 4,ENCRYPTED" with a
// DEK-Info header), which `openssl rsa -aes256 -traditional`, `openssl ec
// -aes256` and OpenSSL 1.x genrsa write. It is only read, never written: its
// key derivation is a single MD5 round. Go's x509.DecryptPEMBlock is
// deprecated for that reason, so the few lines are reimplemented here.

var legacyCiphers = map[string]pbeCipher{
	"DES-CBC":      {"DES-CBC", 8, des.BlockSize, des.NewCipher},
	"DES-EDE3-CBC": {"DES-EDE3-CBC", 24, des.BlockSize, des.NewTripleDESCipher},
	"AES-128-CBC":  {"AES-128-CBC", 16, aes.BlockSize, aes.NewCipher},
	"AES-192-CBC":  {"AES-192-CBC", 24, aes.BlockSize, aes.NewCipher},
	"AES-256-CBC":  {"AES-256-CBC", 32, aes.BlockSize, aes.NewCipher},
}

func decryptLegacyPEM(b *pem.Block, passphrase []byte) ([]byte, error) {
	dek, ok := b.Headers["DEK-Info"]
	if !ok {
		return nil, errors.New("encrypted PEM key has no DEK-Info header")
	}
	name, ivHex, ok := strings.Cut(dek, ",")
	if !ok {
		return nil, fmt.Errorf("malformed DEK-Info header %q", dek)
	}
	c, ok := legacyCiphers[strings.ToUpper(strings.TrimSpace(name))]
	if !ok {
		return nil, fmt.Errorf("private key is encrypted with unsupported cipher %q", name)
	}
	iv, err := hex.DecodeString(strings.TrimSpace(ivHex))
	if err != nil || len(iv) != c.ivLen {
		return nil, fmt.Errorf("malformed DEK-Info header %q", dek)
	}
	if len(passphrase) == 0 {
		return nil, ErrPassphraseRequired
	}
	if len(b.Bytes) == 0 || len(b.Bytes)%c.ivLen != 0 {
		return nil, errMalformedEncrypted
	}
	return decryptCBC(&c, evpBytesToKey(passphrase, iv[:8], c.keyLen), iv, b.Bytes)
}

// evpBytesToKey is OpenSSL's EVP_BytesToKey with MD5 and one iteration, the
// key derivation of legacy PEM encryption; the salt is the first 8 bytes of
// the IV.
func evpBytesToKey(passphrase, salt []byte, keyLen int) []byte {
	var key, prev []byte
	for len(key) < keyLen {
		h := md5.New()
		h.Write(prev)
		h.Write(passphrase)
		h.Write(salt)
		prev = h.Sum(nil)
		key = append(key, prev...)
	}
	return key[:keyLen]
}
