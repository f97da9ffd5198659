package pki

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyType(t *testing.T) {
	for in, want := range map[string]KeyType{"": KeyECDSAP256, "ecdsa-p256": KeyECDSAP256, "RSA-2048": KeyRSA2048, "rsa-4096": KeyRSA4096} {
		if got, err := ParseKeyType(in); err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ParseKeyType("dsa")
	if err == nil || !strings.Contains(err.Error(), `unknown key type "dsa"; use ecdsa-p256, rsa-2048, rsa-4096`) {
		t.Errorf("ParseKeyType(dsa): %v", err)
	}
	if _, err := GenerateKey("ed448"); err == nil {
		t.Error("GenerateKey(ed448) succeeded")
	}
}

func TestGenerateKey(t *testing.T) {
	kinds := []KeyType{"", KeyECDSAP256, KeyRSA2048}
	if !testing.Short() {
		kinds = append(kinds, KeyRSA4096)
	}
	for _, kind := range kinds {
		k, err := GenerateKey(kind)
		if err != nil {
			t.Fatal(err)
		}
		want := map[KeyType]string{"": "ECDSA P-256", KeyECDSAP256: "ECDSA P-256", KeyRSA2048: "RSA 2048", KeyRSA4096: "RSA 4096"}[kind]
		if got := DescribeKey(k.Public()); got != want {
			t.Errorf("GenerateKey(%q) made %s, want %s", kind, got, want)
		}
	}
}

func TestPrivateKeyRoundTrip(t *testing.T) {
	for name, kind := range map[string]KeyType{"ecdsa": KeyECDSAP256, "rsa": KeyRSA2048} {
		key, _ := newKeyPEM(t, kind)
		for _, tc := range []struct {
			name, passphrase, header string
		}{
			{"plain", "", "-----BEGIN PRIVATE KEY-----"},
			{"encrypted", "1234", "-----BEGIN ENCRYPTED PRIVATE KEY-----"},
		} {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				var pass []byte
				if tc.passphrase != "" {
					pass = []byte(tc.passphrase)
				}
				p, err := MarshalPrivateKeyPEM(key, pass)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(string(p), tc.header) {
					t.Fatalf("not %s:\n%s", tc.header, p)
				}
				parseWith := pass
				if pass == nil {
					parseWith = []byte("ignored") // a plain key ignores a passphrase
				}
				got, err := ParsePrivateKeyPEM(p, parseWith)
				if err != nil || !KeyMatches(got, key.Public()) {
					t.Fatalf("round trip: %v", err)
				}
				if pass == nil {
					return
				}
				if _, err := ParsePrivateKeyPEM(p, nil); !errors.Is(err, ErrPassphraseRequired) {
					t.Errorf("no passphrase: %v", err)
				}
				if _, err := ParsePrivateKeyPEM(p, []byte("4321")); !errors.Is(err, ErrWrongPassphrase) {
					t.Errorf("wrong passphrase: %v", err)
				}
			})
		}
	}
	if _, err := MarshalPrivateKeyPEM(nil, nil); err == nil {
		t.Error("MarshalPrivateKeyPEM(nil) succeeded")
	}
}

// TestParseOpenSSLKeys reads every key format openssl writes, each plain and
// with pass phrase 1234, and checks the passphrase errors of the encrypted
// ones.
func TestParseOpenSSLKeys(t *testing.T) {
	dir := t.TempDir()
	openssl(t, dir, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pkcs8.pem")
	openssl(t, dir, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pkcs8.pem")
	openssl(t, dir, "ec", "-in", "ec.pkcs8.pem", "-out", "ec.sec1.pem")
	openssl(t, dir, "rsa", "-in", "rsa.pkcs8.pem", "-traditional", "-out", "rsa.pkcs1.pem")
	openssl(t, dir, "ecparam", "-name", "prime256v1", "-genkey", "-out", "ec.params-first.pem")
	openssl(t, dir, "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pkcs8.pem", "-outform", "DER", "-out", "ec.pkcs8.der")

	encrypted := map[string][]string{
		"pkcs8-aes256-sha256.pem": {"pkcs8", "-topk8", "-in", "ec.pkcs8.pem", "-v2", "aes-256-cbc", "-passout", "pass:1234"},
		"pkcs8-aes128-sha1.pem":   {"pkcs8", "-topk8", "-in", "ec.pkcs8.pem", "-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1", "-passout", "pass:1234"},
		"pkcs8-aes192-sha512.pem": {"pkcs8", "-topk8", "-in", "rsa.pkcs8.pem", "-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA512", "-passout", "pass:1234"},
		"pkcs8-des3.pem":          {"pkcs8", "-topk8", "-in", "rsa.pkcs8.pem", "-v2", "des3", "-passout", "pass:1234"},
		"pkcs8-der.der":           {"pkcs8", "-topk8", "-in", "ec.pkcs8.pem", "-v2", "aes-256-cbc", "-outform", "DER", "-passout", "pass:1234"},
		"legacy-rsa-aes256.pem":   {"rsa", "-in", "rsa.pkcs8.pem", "-traditional", "-aes256", "-passout", "pass:1234"},
		"legacy-rsa-des3.pem":     {"rsa", "-in", "rsa.pkcs8.pem", "-traditional", "-des3", "-passout", "pass:1234"},
		"legacy-ec-aes128.pem":    {"ec", "-in", "ec.pkcs8.pem", "-aes128", "-passout", "pass:1234"},
		"legacy-ec-aes192.pem":    {"ec", "-in", "ec.pkcs8.pem", "-aes192", "-passout", "pass:1234"},
	}
	for name, args := range encrypted {
		openssl(t, dir, append(args, "-out", name)...)
	}

	for _, name := range []string{"ec.pkcs8.pem", "rsa.pkcs8.pem", "ec.sec1.pem", "rsa.pkcs1.pem", "ec.params-first.pem", "ec.pkcs8.der"} {
		t.Run("plain/"+name, func(t *testing.T) {
			k, err := ParsePrivateKeyPEM(readTestFile(t, filepath.Join(dir, name)), nil)
			if err != nil {
				t.Fatal(err)
			}
			switch k.(type) {
			case *ecdsa.PrivateKey, *rsa.PrivateKey:
			default:
				t.Fatalf("got %T", k)
			}
		})
	}
	for name := range encrypted {
		t.Run("encrypted/"+name, func(t *testing.T) {
			data := readTestFile(t, filepath.Join(dir, name))
			if strings.HasPrefix(name, "legacy") && !strings.Contains(string(data), "Proc-Type: 4,ENCRYPTED") {
				t.Fatalf("openssl did not write the legacy form:\n%s", data)
			}
			if _, err := ParsePrivateKeyPEM(data, []byte("1234")); err != nil {
				t.Fatalf("with the right passphrase: %v", err)
			}
			if _, err := ParsePrivateKeyPEM(data, nil); !errors.Is(err, ErrPassphraseRequired) || err.Error() != "private key is encrypted; give its passphrase" {
				t.Errorf("without passphrase: %v", err)
			}
			for _, wrong := range []string{"4321", "12345", "x"} {
				if _, err := ParsePrivateKeyPEM(data, []byte(wrong)); !errors.Is(err, ErrWrongPassphrase) || err.Error() != "wrong passphrase" {
					t.Errorf("with passphrase %q: %v", wrong, err)
				}
			}
		})
	}
}

func TestParsePrivateKeyPEMRefusals(t *testing.T) {
	ch := newTestChain(t, "device-01")
	certPEM := EncodePEM(ch.leaf)
	tests := map[string]struct {
		in   string
		want string
	}{
		"empty":       {"", "not a PEM private key"},
		"text":        {"hello", "not a PEM private key"},
		"cert-only":   {string(certPEM), "no private key found: PEM blocks are CERTIFICATE"},
		"bad-pkcs8":   {string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0}})), "invalid PKCS#8 private key"},
		"bad-pkcs1":   {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{0x30, 0}})), "invalid RSA private key"},
		"bad-sec1":    {string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{0x30, 0}})), "invalid EC private key"},
		"bad-encrypt": {string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{0x30, 0}})), "malformed encrypted private key"},
		"der-garbage": {"\x30\x03\x02\x01\x01", "not a PEM or DER private key"},
		"legacy-no-dek": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: make([]byte, 16)})), "no DEK-Info header"},
		"legacy-bad-cipher": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "RC2-CBC,0011223344556677"}, Bytes: make([]byte, 16)})), `unsupported cipher "RC2-CBC"`},
		"legacy-bad-iv": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: make([]byte, 16)})), "malformed DEK-Info"},
		"legacy-short-data": {string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY",
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00112233445566778899AABBCCDDEEFF"}, Bytes: make([]byte, 15)})), "malformed encrypted private key"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := ParsePrivateKeyPEM([]byte(tc.in), []byte("1234"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}

// buildPBES2 hand-builds an EncryptedPrivateKeyInfo.
func buildPBES2(t *testing.T, kdfOID asn1.ObjectIdentifier, kdf any, cipherOID asn1.ObjectIdentifier, iv []byte, data []byte) []byte {
	t.Helper()
	kdfDER, err := asn1.Marshal(kdf)
	if err != nil {
		t.Fatal(err)
	}
	ivDER, err := asn1.Marshal(iv)
	if err != nil {
		t.Fatal(err)
	}
	params, err := asn1.Marshal(pbes2Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: kdfOID, Parameters: asn1.RawValue{FullBytes: kdfDER}},
		EncryptionScheme:  pkix.AlgorithmIdentifier{Algorithm: cipherOID, Parameters: asn1.RawValue{FullBytes: ivDER}},
	})
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(encryptedPrivateKeyInfo{
		Algorithm:     pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}},
		EncryptedData: data,
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestDecryptPKCS8Params covers the PBES2 parameter checks with hand-built
// structures.
func TestDecryptPKCS8Params(t *testing.T) {
	_, p := newKeyPEM(t, KeyECDSAP256)
	block, _ := pem.Decode(p)
	enc, err := encryptPKCS8(block.Bytes, []byte("1234"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decryptPKCS8(enc, []byte("1234")); err != nil {
		t.Fatalf("2048 iterations: %v", err)
	}

	salt := make([]byte, 8)
	iv := make([]byte, 16)
	data := make([]byte, 32)
	sha256PRF := pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256, Parameters: asn1.NullRawValue}
	type kdfWithLen struct {
		Salt       []byte
		Iterations int
		KeyLength  int
	}
	pbes1, err := asn1.Marshal(encryptedPrivateKeyInfo{
		Algorithm:     pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 3}},
		EncryptedData: data,
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		der  []byte
		want string
	}{
		"too-many-iterations": {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, maxIterations + 1, sha256PRF}, oidAES256CBC, iv, data), "PBKDF2 iterations"},
		"zero-iterations":     {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 0, sha256PRF}, oidAES256CBC, iv, data), "PBKDF2 iterations"},
		"unknown-prf":         {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 1, pkix.AlgorithmIdentifier{Algorithm: oidX}}, oidAES256CBC, iv, data), "unsupported PBKDF2 function"},
		"unknown-kdf":         {buildPBES2(t, oidX, pbkdf2ParamsOut{salt, 1, sha256PRF}, oidAES256CBC, iv, data), "unsupported key derivation"},
		"unknown-cipher":      {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 1, sha256PRF}, oidX, iv, data), "unsupported cipher"},
		"wrong-key-length":    {buildPBES2(t, oidPBKDF2, kdfWithLen{salt, 1, 16}, oidAES256CBC, iv, data), "malformed"},
		"short-iv":            {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 1, sha256PRF}, oidAES256CBC, iv[:8], data), "malformed"},
		"partial-block":       {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 1, sha256PRF}, oidAES256CBC, iv, data[:20]), "malformed"},
		"no-data":             {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 1, sha256PRF}, oidAES256CBC, iv, nil), "malformed"},
		"garbage-key":         {buildPBES2(t, oidPBKDF2, pbkdf2ParamsOut{salt, 1, sha256PRF}, oidAES256CBC, iv, data), "wrong passphrase"},
		"pbes1":               {pbes1, "openssl pkcs8 -topk8"},
		"trailing-data":       {append(append([]byte{}, enc...), 0), "malformed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := decryptPKCS8Key(tc.der, []byte("1234"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one containing %q", err, tc.want)
			}
		})
	}
}
