package cli

// dpsd certificate: CA certificates of the instance (az iot dps certificate),
// uploaded, verified by proof of possession or by the uploader's say-so.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

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

func (o *certOpts) target() target {
	return target{cmd: "certificate", noun: "CA certificate", idFlag: "--certificate-name", id: o.name}
}

func (o *certOpts) urlPath(suffix string) string {
	return "/certificates/" + url.PathEscape(o.name) + suffix
}

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

func (o *certOpts) print(e *env, raw json.RawMessage) error {
	if o.output == outputJSON {
		return writeRaw(e.stdout, raw)
	}
	var c dps.CertificateResponse
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decoding the certificate: %w", err)
	}
	p := c.Properties
	fields := [][2]string{
		{"name", c.Name},
		{"subject", dash(p.Subject)},
		{"isVerified", fmt.Sprint(p.IsVerified)},
	}
	if p.VerificationCode != "" {
		fields = append(fields, [2]string{"verificationCode", p.VerificationCode})
	}
	fields = append(fields,
		[2]string{"thumbprint", dash(p.Thumbprint)},
		[2]string{"sha256Thumbprint", dash(p.SHA256Thumbprint)},
		[2]string{"expiry", dash(p.Expiry)},
		[2]string{"created", dash(p.Created)},
		[2]string{"updated", dash(p.Updated)},
		[2]string{"etag", c.Etag},
	)
	return writeFields(e.stdout, fields)
}

// call runs one request and prints the certificate it returns.
func (o *certOpts) call(ctx context.Context, e *env, cf *connFlags, req svcclient.Request) error {
	cl, err := cf.client(ctx, e.getenv)
	if err != nil {
		return err
	}
	var raw json.RawMessage
	if _, err := do(ctx, cl, o.target(), req, &raw); err != nil {
		return err
	}
	return o.print(e, raw)
}

func certificateCreateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := &cobra.Command{
		Use:     "create",
		Short:   "Upload a CA certificate",
		Example: `  dpsd certificate create --certificate-name azure-iot-test-only-root --path certs/azure-iot-test-only.root.ca.cert.pem --verified true`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		if err := o.checkName(); err != nil {
			return err
		}
		pem, err := readCA(o.path)
		if err != nil {
			return err
		}
		body := dps.CertificateBody{Certificate: pem}
		if o.verified.set {
			v := o.verified.v
			body.IsVerified = &v
		}
		return o.call(c.Context(), e, cf, svcclient.Request{Method: http.MethodPut, Path: o.urlPath(""), Body: body})
	}
	o.addName(c)
	f := flagsOf(c)
	f.str(&o.path, "path", "p", "the CA certificate file (PEM or DER)")
	f.required("path")
	f.optBool(&o.verified, "verified", "mark the certificate verified without proof of possession (true|false; bare: true)")
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func certificateShowCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := &cobra.Command{Use: "show", Short: "Show a CA certificate"}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		return o.call(c.Context(), e, cf, svcclient.Request{Method: http.MethodGet, Path: o.urlPath("")})
	}
	o.addName(c)
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func certificateListCmd(e *env, cf *connFlags) *cobra.Command {
	return listValueCmd(e, cf, "list", "List the CA certificates", "/certificates", (&certOpts{}).target(),
		[]string{"NAME", "SUBJECT", "VERIFIED", "EXPIRY", "THUMBPRINT"},
		func(c dps.CertificateResponse) []string {
			return []string{c.Name, dash(c.Properties.Subject), fmt.Sprint(c.Properties.IsVerified), dash(c.Properties.Expiry), dash(c.Properties.Thumbprint)}
		})
}

func certificateUpdateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := &cobra.Command{
		Use:   "update",
		Short: "Replace a CA certificate or change its verified state",
		Long: `Replace the certificate (--path) or set --verified. The write carries
If-Match with --etag, or with the etag just read. Replacing the certificate by a
different one clears its verified state unless --verified true is given.`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
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
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var cur dps.CertificateResponse
		if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodGet, Path: o.urlPath("")}, &cur); err != nil {
			return err
		}
		if pem == "" {
			pem = cur.Properties.Certificate
		}
		etag := o.etag
		if etag == "" {
			etag = firstNonEmpty(cur.Etag, "*")
		}
		body := dps.CertificateBody{Certificate: pem}
		if o.verified.set {
			v := o.verified.v
			body.IsVerified = &v
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodPut, Path: o.urlPath(""), IfMatch: etag, Body: body}, &raw); err != nil {
			return err
		}
		return o.print(e, raw)
	}
	o.addName(c)
	f := flagsOf(c)
	f.str(&o.path, "path", "p", "a new certificate file (PEM or DER)")
	f.optBool(&o.verified, "verified", "set the verified state (true|false; bare: true)")
	o.addEtag(c, "update only if the certificate still has this etag (default: the etag just read)")
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func certificateDeleteCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := &cobra.Command{Use: "delete", Short: "Delete a CA certificate"}
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		_, err = do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.urlPath(""), IfMatch: o.etag}, nil)
		return err
	}
	o.addName(c)
	o.addEtag(c, "delete only if the certificate still has this etag")
	return leafCmd(c)
}

func certificateCodeCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := &cobra.Command{
		Use:   "generate-verification-code",
		Short: "Generate the code for proof of possession of a CA's key",
		Long: `Generate a verification code. Then make a certificate whose subject CN is
the code, signed by the CA's private key, and upload it with 'dpsd certificate
verify --path FILE'. For example, with OpenSSL:

  openssl req -new -key ca.key -subj "/CN=CODE" -out verify.csr
  openssl x509 -req -in verify.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out verify.pem`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		return o.call(c.Context(), e, cf, svcclient.Request{Method: http.MethodPost, Path: o.urlPath("/generateVerificationCode"), IfMatch: o.etag})
	}
	o.addName(c)
	o.addEtag(c, "generate only if the certificate still has this etag")
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func certificateVerifyCmd(e *env, cf *connFlags) *cobra.Command {
	o := &certOpts{}
	c := &cobra.Command{
		Use:   "verify",
		Short: "Verify a CA certificate with a proof-of-possession certificate",
		Long: `Upload the verification certificate: its subject CN is the code from
'dpsd certificate generate-verification-code' and the CA's private key signed it.
The CA certificate becomes verified.`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		pem, _, err := readCertificateFile("--path", o.path)
		if err != nil {
			return err
		}
		return o.call(c.Context(), e, cf, svcclient.Request{Method: http.MethodPost, Path: o.urlPath("/verify"), IfMatch: o.etag, Body: dps.VerificationCodeRequest{Certificate: pem}})
	}
	o.addName(c)
	f := flagsOf(c)
	f.str(&o.path, "path", "p", "the verification certificate (PEM or DER)")
	f.required("path")
	o.addEtag(c, "verify only if the certificate still has this etag")
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}
