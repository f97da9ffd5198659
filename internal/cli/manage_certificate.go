package cli

// dpsd certificate: CA certificates of the instance (az iot dps certificate),
// uploaded, verified by proof of possession or by the uploader's say-so.

import (
	"cmp"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
)

type certOpts struct {
	name     string
	path     string
	verified optBool
	etag     string
	output   string
}

func (o *certOpts) target() target { return certificates.of(o.name) }

func (o *certOpts) addName(c *cobra.Command) {
	f := flagsOf(c)
	f.str(&o.name, "certificate-name", "n", "name of the CA certificate in the instance (letters, digits and - . _)", "name")
	f.required("certificate-name")
}

func (o *certOpts) addEtag(c *cobra.Command, usage string) {
	flagsOf(c).str(&o.etag, "etag", "e", usage)
}

func (o *certOpts) checkName() error {
	if err := dps.ValidateCAName(o.name); err != nil {
		return withHint(fmt.Errorf("--certificate-name: %v", err), "a name has up to 256 letters, digits and - . _, e.g. azure-iot-test-only-root")
	}
	return nil
}

// body is the upload of pem with the --verified flag.
func (o *certOpts) body(pem string) dps.CertificateBody {
	b := dps.CertificateBody{Certificate: pem}
	if o.verified.set {
		v := o.verified.v
		b.IsVerified = &v
	}
	return b
}

func newCertificateCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("certificate", "Manage CA certificates (az iot dps certificate)",
		`Manage the CA certificates of the instance. Devices of an X.509 enrollment
group authenticate only when their chain ends in a verified certificate: verify
one by proof of possession (generate-verification-code, then verify with a
certificate whose subject CN is the code, signed by the CA's key), or upload it
with --verified true.`, cf)
	c.AddCommand(
		certificateCreateCmd(e, cf),
		certificateShowCmd(e, cf),
		certificateListCmd(e, cf),
		certificateUpdateCmd(e, cf),
		certificateDeleteCmd(e, cf),
		certificateCodeCmd(e, cf),
		certificateVerifyCmd(e, cf),
	)
	return c
}

// readCA reads a CA certificate file for upload.
func readCA(path string) (string, error) {
	pem, cert, err := readCertificateFile("--path", path)
	if err != nil {
		return "", err
	}
	if !cert.IsCA {
		return "", withHint(fmt.Errorf("--path: %s (%s) is not a CA certificate (basic constraints CA:TRUE missing)", path, cert.Subject),
			"upload the root or intermediate CA certificate that signs the device certificates")
	}
	return pem, nil
}

func certificateFields(c *dps.CertificateResponse) [][2]string {
	p := c.Properties
	fields := [][2]string{
		{"name", c.Name},
		{"subject", dash(p.Subject)},
		{"isVerified", fmt.Sprint(p.IsVerified)},
	}
	if p.VerificationCode != "" {
		fields = append(fields, [2]string{"verificationCode", p.VerificationCode})
	}
	return append(fields,
		[2]string{"thumbprint", dash(p.Thumbprint)},
		[2]string{"sha256Thumbprint", dash(p.SHA256Thumbprint)},
		[2]string{"expiry", dash(p.Expiry)},
		[2]string{"created", dash(p.Created)},
		[2]string{"updated", dash(p.Updated)},
		[2]string{"etag", c.Etag},
	)
}

// call runs one request and prints the certificate it returns.
func (o *certOpts) call(s *session, req svcclient.Request) error {
	return show(s, o.target(), req, o.output, "certificate", certificateFields)
}

func certificateCreateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:     "create",
		Short:   "Upload a CA certificate",
		Example: `  dpsd certificate create --certificate-name azure-iot-test-only-root --path certs/azure-iot-test-only.root.ca.cert.pem --verified true`,
	}, &o.output, func(s *session, _ flags) error {
		if err := o.checkName(); err != nil {
			return err
		}
		pem, err := readCA(o.path)
		if err != nil {
			return err
		}
		return o.call(s, svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), Body: o.body(pem)})
	})
	o.addName(c)
	f := flagsOf(c)
	f.str(&o.path, "path", "p", "the CA certificate file (PEM or DER)")
	f.required("path")
	f.optBool(&o.verified, "verified", "mark the certificate verified without proof of possession (true|false; bare: true)")
	return c
}

func certificateShowCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := verb(e, cf, &cobra.Command{Use: "show", Short: "Show a CA certificate"}, &o.output, func(s *session, _ flags) error {
		return o.call(s, svcclient.Request{Method: http.MethodGet, Path: o.target().path("")})
	})
	o.addName(c)
	return c
}

func certificateListCmd(e *env, cf *connFlags) *cobra.Command {
	return listValueCmd(e, cf, "List the CA certificates", certificates,
		[]string{"NAME", "SUBJECT", "VERIFIED", "EXPIRY", "THUMBPRINT"},
		func(c dps.CertificateResponse) []string {
			return []string{c.Name, dash(c.Properties.Subject), fmt.Sprint(c.Properties.IsVerified), dash(c.Properties.Expiry), dash(c.Properties.Thumbprint)}
		})
}

func certificateUpdateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "update",
		Short: "Replace a CA certificate or change its verified state",
		Long: `Replace the certificate (--path) or set --verified. The write carries
If-Match with --etag, or with the etag just read. Replacing the certificate by a
different one clears its verified state unless --verified true is given.`,
	}, &o.output, func(s *session, _ flags) error {
		if err := o.checkName(); err != nil {
			return err
		}
		var pem string
		if o.path != "" {
			var err error
			if pem, err = readCA(o.path); err != nil {
				return err
			}
		}
		if pem == "" && !o.verified.set {
			return withHint(fmt.Errorf("nothing to update"), "give --path with a new certificate and/or --verified true|false")
		}
		var cur dps.CertificateResponse
		if _, err := s.do(o.target(), svcclient.Request{Method: http.MethodGet, Path: o.target().path("")}, &cur); err != nil {
			return err
		}
		if pem == "" {
			pem = cur.Properties.Certificate
		}
		etag := cmp.Or(o.etag, cur.Etag, "*")
		return o.call(s, svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), IfMatch: etag, Body: o.body(pem)})
	})
	o.addName(c)
	f := flagsOf(c)
	f.str(&o.path, "path", "p", "a new certificate file (PEM or DER)")
	f.optBool(&o.verified, "verified", "set the verified state (true|false; bare: true)")
	o.addEtag(c, "update only if the certificate still has this etag (default: the etag just read)")
	return c
}

func certificateDeleteCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := verb(e, cf, &cobra.Command{Use: "delete", Short: "Delete a CA certificate"}, nil, func(s *session, _ flags) error {
		_, err := s.do(o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.target().path(""), IfMatch: o.etag}, nil)
		return err
	})
	o.addName(c)
	o.addEtag(c, "delete only if the certificate still has this etag")
	return c
}

func certificateCodeCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "generate-verification-code",
		Short: "Generate the code for proof of possession of a CA's key",
		Long: `Generate a verification code. Then make a certificate whose subject CN is
the code, signed by the CA's private key, and upload it with 'dpsd certificate
verify --path FILE'. For example, with OpenSSL:

  openssl req -new -key ca.key -subj "/CN=CODE" -out verify.csr
  openssl x509 -req -in verify.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out verify.pem`,
	}, &o.output, func(s *session, _ flags) error {
		return o.call(s, svcclient.Request{Method: http.MethodPost, Path: o.target().path("/generateVerificationCode"), IfMatch: o.etag})
	})
	o.addName(c)
	o.addEtag(c, "generate only if the certificate still has this etag")
	return c
}

func certificateVerifyCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "verify",
		Short: "Verify a CA certificate with a proof-of-possession certificate",
		Long: `Upload the verification certificate: its subject CN is the code from
'dpsd certificate generate-verification-code' and the CA's private key signed it.
The CA certificate becomes verified.`,
	}, &o.output, func(s *session, _ flags) error {
		pem, _, err := readCertificateFile("--path", o.path)
		if err != nil {
			return err
		}
		return o.call(s, svcclient.Request{Method: http.MethodPost, Path: o.target().path("/verify"), IfMatch: o.etag, Body: dps.VerificationCodeRequest{Certificate: pem}})
	})
	o.addName(c)
	f := flagsOf(c)
	f.str(&o.path, "path", "p", "the verification certificate (PEM or DER)")
	f.required("path")
	o.addEtag(c, "verify only if the certificate still has this etag")
	return c
}
