package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// KeyType names a kind of key pair to generate.
type KeyType string

// Key types. ECDSA P-256 is the default: it is fast to generate and makes the
// cheapest TLS handshakes; RSA is there for devices that need it (Azure's X.509 walkthrough's
// openssl command uses rsa:4096).
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyRSA2048   KeyType = "rsa-2048"
	KeyRSA4096   KeyType = "rsa-4096"

	DefaultKeyType = KeyECDSAP256
)

// KeyTypes lists the key types GenerateKey accepts.
var KeyTypes = []KeyType{KeyECDSAP256, KeyRSA2048, KeyRSA4096}

// ParseKeyType reads a key type name, ignoring case; "" is DefaultKeyType.
func ParseKeyType(s string) (KeyType, error) {
	if s == "" {
		return DefaultKeyType, nil
	}
	for _, k := range KeyTypes {
		if strings.EqualFold(s, string(k)) {
			return k, nil
		}
	}
	names := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown key type %q; use %s", s, strings.Join(names, ", "))
}

// GenerateKey makes a new private key of the given type ("" is
// DefaultKeyType).
func GenerateKey(kind KeyType) (crypto.Signer, error) {
	switch kind {
	case "", KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	_, err := ParseKeyType(string(kind))
	return nil, err
}

// Errors of ParsePrivateKeyPEM that callers turn into hints.
var (
	// ErrPassphraseRequired means the key is encrypted and no passphrase was
	// given.
	ErrPassphraseRequired = errors.New("private key is encrypted; give its passphrase")
	// ErrWrongPassphrase means the passphrase does not decrypt the key.
	ErrWrongPassphrase = errors.New("wrong passphrase")
)

// PEM block types of private keys.
const (
	pemPKCS8          = "PRIVATE KEY"
	pemEncryptedPKCS8 = "ENCRYPTED PRIVATE KEY"
	pemPKCS1          = "RSA PRIVATE KEY"
	pemSEC1           = "EC PRIVATE KEY"
)

// MarshalPrivateKeyPEM encodes key as a PKCS#8 "PRIVATE KEY" PEM block, or,
// when passphrase is not empty, as an "ENCRYPTED PRIVATE KEY" block in the
// form OpenSSL 3 writes and reads: PKCS#5 PBES2 with PBKDF2-HMAC-SHA256 and
// AES-256-CBC (openssl pkcs8 -topk8 -v2 aes-256-cbc). curl, openssl and the
// Azure SDKs' TLS stacks read it with the same passphrase.
func MarshalPrivateKeyPEM(key crypto.Signer, passphrase []byte) ([]byte, error) {
	if key == nil {
		return nil, errors.New("no private key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if len(passphrase) == 0 {
		return pem.EncodeToMemory(&pem.Block{Type: pemPKCS8, Bytes: der}), nil
	}
	enc, err := encryptPKCS8(der, passphrase, defaultIterations)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemEncryptedPKCS8, Bytes: enc}), nil
}

// ParsePrivateKeyPEM reads the first private key in data: PKCS#8 "PRIVATE
// KEY", PBES2-encrypted "ENCRYPTED PRIVATE KEY" (PBKDF2 with HMAC-SHA-1 or
// SHA-2; AES-128/192/256-CBC or DES-EDE3-CBC — what openssl req, genpkey and
// pkcs8 write), PKCS#1 "RSA PRIVATE KEY", SEC1 "EC PRIVATE KEY", and those
// two encrypted in the legacy "Proc-Type: 4,ENCRYPTED" form. Other blocks
// (certificates, EC PARAMETERS) are skipped. Input without any PEM block is
// tried as DER. passphrase is used only for encrypted keys; a missing one
// gives ErrPassphraseRequired and one that does not decrypt the key gives
// ErrWrongPassphrase.
func ParsePrivateKeyPEM(data []byte, passphrase []byte) (crypto.Signer, error) {
	var types []string
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case pemPKCS8, pemEncryptedPKCS8, pemPKCS1, pemSEC1:
			return parseKeyBlock(b, passphrase)
		}
		types = append(types, b.Type)
	}
	if len(types) > 0 {
		return nil, fmt.Errorf("no private key found: PEM blocks are %s", strings.Join(types, ", "))
	}
	if len(data) > 0 && data[0] == 0x30 {
		return parseKeyDER(data, passphrase)
	}
	return nil, errors.New("not a PEM private key")
}

func parseKeyBlock(b *pem.Block, passphrase []byte) (crypto.Signer, error) {
	der := b.Bytes
	if strings.HasPrefix(b.Headers["Proc-Type"], "4,ENCRYPTED") {
		var err error
		if der, err = decryptLegacyPEM(b, passphrase); err != nil {
			return nil, err
		}
		key, err := parseKeyDERType(b.Type, der)
		if err != nil {
			// The padding matched by chance but the plaintext is garbage.
			return nil, ErrWrongPassphrase
		}
		return key, nil
	}
	if b.Type == pemEncryptedPKCS8 {
		return decryptPKCS8Key(der, passphrase)
	}
	return parseKeyDERType(b.Type, der)
}

func decryptPKCS8Key(der, passphrase []byte) (crypto.Signer, error) {
	plain, err := decryptPKCS8(der, passphrase)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		// CBC padding matches a wrong key about once in 256 tries; the
		// plaintext then is not a key.
		return nil, ErrWrongPassphrase
	}
	return asSigner(key)
}

func parseKeyDERType(typ string, der []byte) (crypto.Signer, error) {
	switch typ {
	case pemPKCS1:
		k, err := x509.ParsePKCS1PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("invalid RSA private key: %w", err)
		}
		return k, nil
	case pemSEC1:
		k, err := x509.ParseECPrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("invalid EC private key: %w", err)
		}
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("invalid PKCS#8 private key: %w", err)
	}
	return asSigner(k)
}

// parseKeyDER tries the DER forms in turn, for key files written with
// -outform DER.
func parseKeyDER(der, passphrase []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return asSigner(k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	if isEncryptedPKCS8(der) {
		return decryptPKCS8Key(der, passphrase)
	}
	return nil, errors.New("not a PEM or DER private key")
}

func asSigner(k any) (crypto.Signer, error) {
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T: it cannot sign", k)
	}
	return s, nil
}

// KeyMatches reports whether pub is the public half of key.
func KeyMatches(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}
