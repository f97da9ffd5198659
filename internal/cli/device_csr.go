package cli

// dpsd device register --csr: ask for a certificate at registration.

import (
	"cmp"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dpsd/dpsd/client"
	"github.com/dpsd/dpsd/internal/pki"
)

// csrRequest is the certificate a device register asks for: the CSR sent,
// the key made for it (nil with --csr-file), and where the results go.
type csrRequest struct {
	der             []byte
	key             crypto.Signer
	certOut, keyOut string
	force           bool
}

// certificateRequest makes (--csr) or reads (--csr-file) the CSR for
// registrationID; nil when neither flag is given. The output files are
// checked now, so that a certificate is never issued only to be lost.
func (f *deviceFlags) certificateRequest(registrationID string) (*csrRequest, error) {
	if !f.csr && f.csrFile == "" {
		for _, n := range []struct{ flag, v string }{{"--csr-key-out", f.csrKeyOut}, {"--cert-out", f.certOut}} {
			if n.v != "" {
				return nil, withHint(fmt.Errorf("%s needs --csr or --csr-file", n.flag), "--csr asks for a certificate at registration")
			}
		}
		return nil, nil
	}
	if f.csr && f.csrFile != "" {
		return nil, withHint(errors.New("--csr and --csr-file are alternatives"), "--csr makes a new key and CSR; --csr-file sends one made elsewhere")
	}
	r := &csrRequest{force: f.force,
		certOut: cmp.Or(f.certOut, registrationID+"-cert.pem"), keyOut: cmp.Or(f.csrKeyOut, registrationID+"-key.pem")}
	outs := []struct{ flag, path string }{{"--cert-out", r.certOut}}
	if certSamePath(f.csrFile, r.certOut) {
		return nil, withHint(fmt.Errorf("--cert-out %s would overwrite --csr-file", r.certOut), "choose another --cert-out")
	}
	if f.csrFile != "" {
		if f.csrKeyOut != "" {
			return nil, withHint(errors.New("--csr-key-out goes with --csr"), "with --csr-file the key is the one the CSR was made with")
		}
		der, err := readCSR(f.csrFile, registrationID)
		if err != nil {
			return nil, err
		}
		r.der, r.keyOut = der, ""
	} else {
		kt, err := pki.ParseKeyType(f.csrKeyType)
		if err != nil {
			return nil, withHint(fmt.Errorf("--csr-key-type: %v", err), "ecdsa-p256 is the default")
		}
		if r.key, err = pki.GenerateKey(kt); err != nil {
			return nil, err
		}
		if r.der, err = client.CSRFor(registrationID, r.key); err != nil {
			return nil, err
		}
		outs = append(outs, struct{ flag, path string }{"--csr-key-out", r.keyOut})
	}
	if len(outs) == 2 && certSamePath(outs[0].path, outs[1].path) {
		return nil, withHint(fmt.Errorf("--cert-out and --csr-key-out name the same file %s", r.certOut), "give each output its own file")
	}
	for _, o := range outs {
		if _, err := os.Lstat(o.path); err == nil && !f.force {
			return nil, withHint(fmt.Errorf("%s %s already exists", o.flag, o.path), "use --force to overwrite it, or choose another %s", o.flag)
		}
	}
	return r, nil
}

// readCSR reads a CSR file (PEM or DER) and checks that it asks for
// registrationID, as the service will.
func readCSR(path, registrationID string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, withHint(fmt.Errorf("--csr-file: %w", err), "check the path given to --csr-file")
	}
	der := data
	if b, _ := pem.Decode(data); b != nil {
		der = b.Bytes
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, withHint(fmt.Errorf("--csr-file %s is not a certificate signing request: %v", path, err), "make one with: openssl req -new -key device.key -subj /CN=%s -out device.csr", registrationID)
	}
	if !strings.EqualFold(req.Subject.CommonName, registrationID) {
		return nil, withHint(fmt.Errorf("--csr-file asks for CN=%s, but the registration ID is %s", req.Subject.CommonName, registrationID), "the CSR's subject CN must be the registration ID")
	}
	return der, nil
}

// save writes the issued chain and the new key, and returns the lines that
// tell where they are.
func (r *csrRequest) save(state *client.RegistrationState) ([][2]string, error) {
	certs, err := state.IssuedCertificates()
	if err != nil {
		return nil, err
	}
	if err := pki.WriteCertificatesFile(r.certOut, certs, r.force); err != nil {
		return nil, fileError("--cert-out", r.certOut, err)
	}
	out := [][2]string{
		{"certificate", r.certOut},
		{"certificateSerialNumber", pki.SerialNumber(certs[0])},
		{"certificateNotAfter", certs[0].NotAfter.UTC().Format(time.RFC3339)},
	}
	if r.key != nil {
		if err := pki.WritePrivateKeyFile(r.keyOut, r.key, nil, r.force); err != nil {
			return nil, fileError("--csr-key-out", r.keyOut, err)
		}
		out = append(out, [2]string{"certificateKey", r.keyOut})
	}
	return out, nil
}
