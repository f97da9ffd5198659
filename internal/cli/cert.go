package cli

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
)

// newCertCmd is `dpsd cert`: the openssl steps of Azure's walkthroughs and
// certificate tutorials, as single commands.
func newCertCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "cert",
		Short: "Create and inspect X.509 certificates: CAs, device certificates, verification certificates",
		Long: `Create the X.509 certificates DPS X.509 attestation needs, without openssl:
a root CA, intermediate CAs, device certificates with their full chain, the
self-signed device certificate of an individual enrollment, and the
verification certificate that proves possession of a CA's key. 'dpsd cert
show' prints the certificate information DPS reports.

Keys are ECDSA P-256 unless --key-type says otherwise, written as PKCS#8 PEM
with mode 0600, encrypted when --passphrase is given (PBES2, PBKDF2-SHA256,
AES-256-CBC, which curl and openssl read). Existing files are
kept unless --force is given.`,
		Example: `  # A device certificate chain, as in Azure's enrollment group tutorial:
  dpsd cert create-root-ca --common-name "Azure IoT Hub CA Cert Test Only"
  dpsd cert create-intermediate-ca --common-name "Azure IoT Hub Intermediate Cert Test Only" \
      --ca-cert root.cert.pem --ca-key root.key.pem
  dpsd cert create-device --common-name device-01 \
      --ca-cert intermediate-full-chain.cert.pem --ca-key intermediate.key.pem
  curl --cert device-01-full-chain.cert.pem --key device-01.key.pem ...

  # The self-signed device certificate of Azure's X.509-over-HTTPS walkthrough:
  dpsd cert create-self-signed --common-name my-x509-device --key-type rsa-4096 --passphrase 1234
  curl --cert device-cert.pem:1234 --key device-key.pem ...`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(
		newCertCreateRootCACmd(e),
		newCertCreateIntermediateCACmd(e),
		newCertCreateDeviceCmd(e),
		newCertCreateSelfSignedCmd(e),
		newCertCreateVerificationCmd(e),
		newCertShowCmd(e),
	)
	return c
}

// certOutFlags are the flags of the new certificate and its key.
type certOutFlags struct {
	commonName string
	certFile   string
	keyFile    string
	chainFile  string
	keyType    string
	days       int
	passphrase string
	force      bool
}

func (f *certOutFlags) add(c *cobra.Command, cnUsage, certFile, keyFile string, days int) {
	fl := c.Flags()
	fl.StringVar(&f.commonName, "common-name", "", cnUsage)
	fl.StringVar(&f.certFile, "cert-file", certFile, "file to write the certificate to")
	fl.StringVar(&f.keyFile, "key-file", keyFile, "file to write the private key to (mode 0600)")
	fl.StringVar(&f.keyType, "key-type", string(pki.DefaultKeyType), "key type: ecdsa-p256, rsa-2048 or rsa-4096")
	fl.IntVar(&f.days, "days", days, "validity in days")
	fl.StringVar(&f.passphrase, "passphrase", "", "encrypt the private key with this pass phrase (default: not encrypted)")
	fl.BoolVar(&f.force, "force", false, "overwrite existing files")
	_ = c.MarkFlagRequired("common-name")
}

// caOptions checks the flags of a CA certificate: the shared ones, then its
// common name.
func (f *certOutFlags) caOptions() (pki.Options, error) {
	opts, err := f.options()
	if err != nil {
		return opts, err
	}
	return opts, certCheckCACommonName(f.commonName)
}

// deviceOptions checks the flags of a device certificate: its common name
// (the registration ID), then the shared ones.
func (f *certOutFlags) deviceOptions() (pki.Options, error) {
	if err := certCheckDeviceCommonName(f.commonName); err != nil {
		return pki.Options{}, err
	}
	return f.options()
}

// options checks the flags shared by every create command.
func (f *certOutFlags) options() (pki.Options, error) {
	kt, err := pki.ParseKeyType(f.keyType)
	if err != nil {
		return pki.Options{}, withHint(err, "use --key-type ecdsa-p256 (the default), rsa-2048 or rsa-4096")
	}
	if f.days <= 0 {
		return pki.Options{}, withHint(fmt.Errorf("--days must be a positive number of days, not %d", f.days), "give the validity in days, e.g. --days 365")
	}
	return pki.Options{CommonName: f.commonName, KeyType: kt, Days: f.days}, nil
}

// certCheckCACommonName applies RFC 5280's limit on a CA's common name.
func certCheckCACommonName(cn string) error {
	if strings.TrimSpace(cn) == "" {
		return withHint(errors.New("common name is empty"), "give --common-name, e.g. --common-name \"My Root CA\"")
	}
	if len(cn) > dps.MaxX509IDLength {
		return withHint(fmt.Errorf("common name is %d characters long; X.509 limits it to %d", len(cn), dps.MaxX509IDLength), "give a shorter --common-name")
	}
	return nil
}

// certCheckDeviceCommonName applies the registration ID rules: a device
// certificate's CN is its registration ID, at most 64 characters.
func certCheckDeviceCommonName(cn string) error {
	const hint = "the common name of a device certificate is its registration ID: letters, digits and - . _ :, starting with a letter or digit, ending with a letter, digit or -, at most 64 characters"
	if err := dps.ValidateID("registration ID", cn); err != nil {
		return withHint(err, hint)
	}
	if len(cn) > dps.MaxX509IDLength {
		return withHint(fmt.Errorf("registration ID %q is %d characters long; a certificate common name is limited to %d", cn, len(cn), dps.MaxX509IDLength), hint)
	}
	return nil
}

// certCAFlags name the issuing CA.
type certCAFlags struct {
	certFile   string
	keyFile    string
	passphrase string
}

func (f *certCAFlags) add(c *cobra.Command, what string) {
	fl := c.Flags()
	fl.StringVar(&f.certFile, "ca-cert", "", "PEM file of the CA certificate that signs the "+what+", optionally followed by the CA's own chain (required)")
	fl.StringVar(&f.keyFile, "ca-key", "", "PEM file of the CA's private key (required)")
	fl.StringVar(&f.passphrase, "ca-passphrase", "", "pass phrase of --ca-key, if it is encrypted")
	_ = c.MarkFlagRequired("ca-cert")
	_ = c.MarkFlagRequired("ca-key")
}

// load reads the CA certificate file (the issuer first, then its own chain)
// and the CA key. requireCA refuses a first certificate without CA:TRUE,
// which could not sign a chain that verifies.
func (f *certCAFlags) load(requireCA bool) ([]*x509.Certificate, crypto.Signer, error) {
	certs, err := pki.ReadCertificatesFile(f.certFile)
	if err != nil {
		return nil, nil, withHint(err, "give --ca-cert the PEM file of the issuing CA certificate")
	}
	ca := certs[0]
	if requireCA && (!ca.BasicConstraintsValid || !ca.IsCA) {
		return nil, nil, withHint(fmt.Errorf("%s: the first certificate (%s) is not a CA certificate", f.certFile, pki.DistinguishedName(ca.RawSubject)),
			"--ca-cert must start with the certificate of the issuing CA, e.g. root.cert.pem or intermediate-full-chain.cert.pem")
	}
	key, err := pki.ReadPrivateKeyFile(f.keyFile, []byte(f.passphrase))
	switch {
	case errors.Is(err, pki.ErrPassphraseRequired):
		return nil, nil, withHint(err, "give --ca-passphrase: %s is encrypted", f.keyFile)
	case errors.Is(err, pki.ErrWrongPassphrase):
		return nil, nil, withHint(err, "give --ca-passphrase the pass phrase %s was encrypted with", f.keyFile)
	case err != nil:
		return nil, nil, withHint(err, "give --ca-key the PEM file of the CA's private key")
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(ca.PublicKey) {
		return nil, nil, withHint(fmt.Errorf("%s is not the private key of %s (%s)", f.keyFile, f.certFile, pki.DistinguishedName(ca.RawSubject)),
			"--ca-key must be the key of the first certificate in --ca-cert")
	}
	return certs, key, nil
}

// certOutFile is a file a command is about to write, named by its flag.
type certOutFile struct {
	flag, path string
}

// certCheckOutputs refuses empty, duplicate and existing output paths (unless
// force) and outputs that would replace an input, before anything is made.
func certCheckOutputs(outs []certOutFile, inputs []string, force bool) error {
	for i, o := range outs {
		if o.path == "" {
			return withHint(fmt.Errorf("--%s is empty", o.flag), "give --%s a file name", o.flag)
		}
		for _, p := range outs[:i] {
			if certSamePath(p.path, o.path) {
				return withHint(fmt.Errorf("--%s and --%s name the same file %s", p.flag, o.flag, o.path), "give each output its own file")
			}
		}
		for _, in := range inputs {
			if certSamePath(in, o.path) {
				return withHint(fmt.Errorf("--%s %s would overwrite an input file", o.flag, o.path), "choose another --%s", o.flag)
			}
		}
		if _, err := os.Lstat(o.path); err == nil && !force {
			return withHint(fmt.Errorf("%s already exists", o.path), "use --force to overwrite it, or choose another --%s", o.flag)
		}
	}
	return nil
}

func certSamePath(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// certWrite writes a new certificate, its key and, when chainFile is
// set, the certificate followed by chain; it reports each file on w.
// certIssue checks the output files, loads the issuing CA of ca, and writes
// the certificate (and chain) that issue makes with it.
func certIssue(e *env, f *certOutFlags, ca *certCAFlags, opts pki.Options, issue func(pki.Options, *x509.Certificate, crypto.Signer) (*x509.Certificate, crypto.Signer, error)) error {
	outs := []certOutFile{{"cert-file", f.certFile}, {"key-file", f.keyFile}}
	if f.chainFile != "" {
		outs = append(outs, certOutFile{"chain-file", f.chainFile})
	}
	if err := certCheckOutputs(outs, []string{ca.certFile, ca.keyFile}, f.force); err != nil {
		return err
	}
	chain, caKey, err := ca.load(true)
	if err != nil {
		return err
	}
	cert, key, err := issue(opts, chain[0], caKey)
	if err != nil {
		return err
	}
	return certWrite(e.stdout, f, cert, key, chain, ca.certFile)
}

// certSelfSigned writes a certificate that signs itself (a root CA, or a
// device's self-signed certificate) and its key.
func certSelfSigned(e *env, f *certOutFlags, opts pki.Options, issue func(pki.Options) (*x509.Certificate, crypto.Signer, error)) error {
	if err := certCheckOutputs([]certOutFile{{"cert-file", f.certFile}, {"key-file", f.keyFile}}, nil, f.force); err != nil {
		return err
	}
	cert, key, err := issue(opts)
	if err != nil {
		return err
	}
	return certWrite(e.stdout, f, cert, key, nil, "")
}

func certWrite(w io.Writer, f *certOutFlags, cert *x509.Certificate, key crypto.Signer, chain []*x509.Certificate, chainFrom string) error {
	if err := pki.WriteCertificatesFile(f.certFile, []*x509.Certificate{cert}, f.force); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s (certificate %s, SHA-1 thumbprint %s, valid until %s)\n",
		f.certFile, pki.DistinguishedName(cert.RawSubject), pki.SHA1Thumbprint(cert), cert.NotAfter.UTC().Format(time.RFC3339))
	if err := pki.WritePrivateKeyFile(f.keyFile, key, []byte(f.passphrase), f.force); err != nil {
		return err
	}
	protection := "not encrypted"
	if f.passphrase != "" {
		protection = "encrypted with the pass phrase"
	}
	fmt.Fprintf(w, "wrote %s (private key, %s, %s)\n", f.keyFile, pki.DescribeKey(key.Public()), protection)
	if f.chainFile == "" {
		return nil
	}
	full := append([]*x509.Certificate{cert}, chain...)
	if err := pki.WriteCertificatesFile(f.chainFile, full, f.force); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s (certificate chain: %s followed by %s)\n", f.chainFile, f.certFile, certCountCerts(len(chain), chainFrom))
	return nil
}

func certCountCerts(n int, file string) string {
	if n == 1 {
		return "the certificate of " + file
	}
	return fmt.Sprintf("the %d certificates of %s", n, file)
}

func newCertCreateRootCACmd(e *env) *cobra.Command {
	var f certOutFlags
	c := &cobra.Command{
		Use:   "create-root-ca",
		Short: "Create a self-signed root CA certificate and its key",
		Long: `Create a self-signed root CA certificate (CA:TRUE, key usage keyCertSign and
cRLSign) and its private key. Upload the certificate to the service and prove
possession of its key with 'dpsd cert create-verification', or use it to sign
intermediate CAs and device certificates.`,
		Example: `  dpsd cert create-root-ca --common-name "Azure IoT Hub CA Cert Test Only"`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts, err := f.caOptions()
			if err != nil {
				return err
			}
			return certSelfSigned(e, &f, opts, pki.NewRootCA)
		},
	}
	f.add(c, "subject common name of the root CA (required)", "root.cert.pem", "root.key.pem", 365)
	return c
}

func newCertCreateIntermediateCACmd(e *env) *cobra.Command {
	var f certOutFlags
	var ca certCAFlags
	c := &cobra.Command{
		Use:   "create-intermediate-ca",
		Short: "Create an intermediate CA certificate signed by another CA",
		Long: `Create an intermediate CA certificate signed by the CA of --ca-cert and
--ca-key, and its private key. --chain-file receives the new certificate
followed by every certificate of --ca-cert; give that chain file as --ca-cert
of the next command, so a chain of any depth accumulates and a device's full
chain reaches the root.`,
		Example: `  dpsd cert create-intermediate-ca --common-name "Azure IoT Hub Intermediate Cert Test Only" \
      --ca-cert root.cert.pem --ca-key root.key.pem`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts, err := f.caOptions()
			if err != nil {
				return err
			}
			return certIssue(e, &f, &ca, opts, pki.NewIntermediateCA)
		},
	}
	f.add(c, "subject common name of the intermediate CA (required)", "intermediate.cert.pem", "intermediate.key.pem", 365)
	c.Flags().StringVar(&f.chainFile, "chain-file", "intermediate-full-chain.cert.pem", `file to write the new certificate followed by the --ca-cert chain to ("" to skip)`)
	ca.add(c, "intermediate")
	return c
}

func newCertCreateDeviceCmd(e *env) *cobra.Command {
	var f certOutFlags
	var ca certCAFlags
	c := &cobra.Command{
		Use:   "create-device",
		Short: "Create a device certificate signed by a CA, with its full chain file",
		Long: `Create a device (leaf) certificate signed by the CA of --ca-cert and --ca-key:
subject CN = the registration ID, CA:FALSE, extended key usage clientAuth.
--chain-file receives the full chain a device presents to register with an
enrollment group: the device certificate followed by every certificate of
--ca-cert (the issuing CA first, then its own issuers, as a chain file made
by create-intermediate-ca has them).

Default file names derive from the common name: <CN>.cert.pem, <CN>.key.pem
and <CN>-full-chain.cert.pem.`,
		Example: `  dpsd cert create-device --common-name device-01 \
      --ca-cert intermediate-full-chain.cert.pem --ca-key intermediate.key.pem
  curl --cert device-01-full-chain.cert.pem --key device-01.key.pem ...`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts, err := f.deviceOptions()
			if err != nil {
				return err
			}
			fl := c.Flags()
			if !fl.Changed("cert-file") {
				f.certFile = f.commonName + ".cert.pem"
			}
			if !fl.Changed("key-file") {
				f.keyFile = f.commonName + ".key.pem"
			}
			if !fl.Changed("chain-file") {
				f.chainFile = f.commonName + "-full-chain.cert.pem"
			}
			return certIssue(e, &f, &ca, opts, pki.NewLeaf)
		},
	}
	f.add(c, "registration ID of the device, its certificate's subject CN (required)", "", "", 365)
	c.Flags().Lookup("cert-file").Usage = "file to write the certificate to (default <common-name>.cert.pem)"
	c.Flags().Lookup("key-file").Usage = "file to write the private key to, mode 0600 (default <common-name>.key.pem)"
	c.Flags().StringVar(&f.chainFile, "chain-file", "", `file to write the full chain to (default <common-name>-full-chain.cert.pem; "" to skip)`)
	ca.add(c, "device certificate")
	return c
}

func newCertCreateSelfSignedCmd(e *env) *cobra.Command {
	var f certOutFlags
	c := &cobra.Command{
		Use:   "create-self-signed",
		Short: "Create a self-signed device certificate for an individual enrollment",
		Long: `Create a self-signed device certificate and its key, as the openssl command
of Azure's X.509-over-HTTPS walkthrough does: subject CN = the registration
ID, CA:FALSE, extended key usage clientAuth, valid 30 days unless --days says
otherwise. Enroll it with an individual enrollment; the device presents it as
is.`,
		Example: `  # The certificate of Azure's X.509-over-HTTPS walkthrough (openssl req -x509 -newkey rsa:4096 ... -subj /CN=my-x509-device, pass phrase 1234):
  dpsd cert create-self-signed --common-name my-x509-device --key-type rsa-4096 --passphrase 1234
  curl --cert device-cert.pem:1234 --key device-key.pem ...`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts, err := f.deviceOptions()
			if err != nil {
				return err
			}
			return certSelfSigned(e, &f, opts, pki.NewSelfSigned)
		},
	}
	f.add(c, "registration ID of the device, its certificate's subject CN (required)", "device-cert.pem", "device-key.pem", 30)
	return c
}

func newCertCreateVerificationCmd(e *env) *cobra.Command {
	var ca certCAFlags
	var code, certFile string
	var force bool
	c := &cobra.Command{
		Use:   "create-verification",
		Short: "Create the verification certificate that proves possession of a CA's key",
		Long: `Create a verification certificate for a CA certificate uploaded to the
service: subject CN = the verification code the service generated, signed by
the CA's private key. Give it back to the service to mark the CA verified.`,
		Example: `  dpsd cert create-verification --code 3D85D8D3A3A1A7B1C41EE6D8D57E2C2B9E8F20CD45A3D8D2 \
      --ca-cert root.cert.pem --ca-key root.key.pem`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			switch {
			case strings.TrimSpace(code) == "":
				return withHint(errors.New("verification code is empty"), "give --code the verification code the service generated for the CA")
			case len(code) > dps.MaxX509IDLength:
				return withHint(fmt.Errorf("verification code is %d characters long; a certificate common name is limited to %d", len(code), dps.MaxX509IDLength),
					"give --code the verification code the service generated for the CA")
			}
			if err := certCheckOutputs([]certOutFile{{"cert-file", certFile}}, []string{ca.certFile, ca.keyFile}, force); err != nil {
				return err
			}
			// A CA uploaded without CA:TRUE can still prove possession.
			chain, caKey, err := ca.load(false)
			if err != nil {
				return err
			}
			cert, err := pki.NewVerificationCert(code, chain[0], caKey)
			if err != nil {
				return err
			}
			if err := pki.WriteCertificatesFile(certFile, []*x509.Certificate{cert}, force); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote %s (verification certificate %s, signed by %s)\n",
				certFile, pki.DistinguishedName(cert.RawSubject), pki.DistinguishedName(cert.RawIssuer))
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&code, "code", "", "verification code the service generated for the CA (required)")
	fl.StringVar(&certFile, "cert-file", "verification.cert.pem", "file to write the verification certificate to")
	fl.BoolVar(&force, "force", false, "overwrite an existing file")
	_ = c.MarkFlagRequired("code")
	ca.add(c, "verification certificate: the CA being verified")
	return c
}

func newCertShowCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "show FILE",
		Short: "Print the X509CertificateInfo of every certificate in a file",
		Long: `Print what DPS reports about each certificate in FILE (PEM, base64 DER or
DER; "-" reads standard input): subject and issuer names, SHA-1 and SHA-256
thumbprints, validity, serial number, version. Names are in certificate order
with ", " separators, as Azure prints them. The table also shows the key,
whether the certificate is a CA, its extended key usage and alternative
names; --output json prints a JSON array of X509CertificateInfo objects.`,
		Example: `  dpsd cert show device-01-full-chain.cert.pem
  dpsd cert show --output json device-cert.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			var (
				data []byte
				err  error
			)
			if args[0] == "-" {
				data, err = io.ReadAll(e.stdin)
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			certs, err := pki.ParseCertificates(data)
			if err != nil {
				return withHint(fmt.Errorf("%s: %w", args[0], err), "give a file of PEM certificates, base64 DER or DER")
			}
			if output == outputJSON {
				infos := make([]*dps.X509CertificateInfo, len(certs))
				for i, cert := range certs {
					infos[i] = pki.Info(cert)
				}
				return writeJSON(e.stdout, infos)
			}
			for i, cert := range certs {
				if i > 0 {
					fmt.Fprintln(e.stdout)
				}
				if err := writeFields(e.stdout, certFields(cert)); err != nil {
					return err
				}
			}
			return nil
		},
	}
	addOutputFlag(c, &output)
	return c
}

func certFields(c *x509.Certificate) [][2]string {
	info := pki.Info(c)
	ca := "no"
	if c.BasicConstraintsValid && c.IsCA {
		ca = "yes"
		if c.MaxPathLen > 0 || c.MaxPathLenZero {
			ca = fmt.Sprintf("yes, path length %d", c.MaxPathLen)
		}
	}
	fields := [][2]string{
		{"subjectName", info.SubjectName},
		{"issuerName", info.IssuerName},
		{"sha1Thumbprint", info.SHA1Thumbprint},
		{"sha256Thumbprint", info.SHA256Thumbprint},
		{"notBeforeUtc", info.NotBeforeUtc.UTC().Format(time.RFC3339)},
		{"notAfterUtc", info.NotAfterUtc.UTC().Format(time.RFC3339)},
		{"serialNumber", info.SerialNumber},
		{"version", fmt.Sprint(info.Version)},
		{"key", pki.DescribeKey(c.PublicKey)},
		{"ca", ca},
	}
	if eku := certEKUList(c); eku != "" {
		fields = append(fields, [2]string{"extendedKeyUsage", eku})
	}
	var sans []string
	sans = append(sans, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	for _, u := range c.URIs {
		sans = append(sans, u.String())
	}
	sans = append(sans, c.EmailAddresses...)
	if len(sans) > 0 {
		fields = append(fields, [2]string{"subjectAltNames", strings.Join(sans, ", ")})
	}
	return fields
}

var certEKUNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "any",
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

func certEKUList(c *x509.Certificate) string {
	var names []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := certEKUNames[u]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("usage %d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return strings.Join(names, ", ")
}
