package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// File modes of what this package writes: certificates are public, keys are
// readable by their owner only.
const (
	CertFileMode fs.FileMode = 0o644
	KeyFileMode  fs.FileMode = 0o600
)

// ReadCertificatesFile reads every certificate in a file (see
// ParseCertificates); errors name the file.
func ReadCertificatesFile(name string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return certs, nil
}

// ReadPrivateKeyFile reads the private key in a file (see
// ParsePrivateKeyPEM); errors name the file and still match
// ErrPassphraseRequired and ErrWrongPassphrase with errors.Is.
func ReadPrivateKeyFile(name string, passphrase []byte) (crypto.Signer, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKeyPEM(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return key, nil
}

// WriteCertificatesFile writes certs as PEM, in order, with mode CertFileMode.
func WriteCertificatesFile(name string, certs []*x509.Certificate, overwrite bool) error {
	if len(certs) == 0 {
		return errors.New("no certificate to write")
	}
	return WriteFile(name, EncodePEM(certs...), CertFileMode, overwrite)
}

// WritePrivateKeyFile writes key as MarshalPrivateKeyPEM encodes it, with
// mode KeyFileMode.
func WritePrivateKeyFile(name string, key crypto.Signer, passphrase []byte, overwrite bool) error {
	data, err := MarshalPrivateKeyPEM(key, passphrase)
	if err != nil {
		return err
	}
	return WriteFile(name, data, KeyFileMode, overwrite)
}

// WriteFile writes data to a new file with mode perm. An existing file is
// an error matching fs.ErrExist unless overwrite is set; it is then removed
// first, so the new file gets perm (a key never inherits the looser mode of
// the file it replaces) and a symbolic link in its place is replaced, not
// followed.
func WriteFile(name string, data []byte, perm fs.FileMode, overwrite bool) error {
	if overwrite {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return existError{name}
		}
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return err
	}
	return nil
}

type existError struct{ name string }

func (e existError) Error() string { return e.name + " already exists" }
func (e existError) Unwrap() error { return fs.ErrExist }
