package cli

// dpsd enrollment and dpsd enrollment-group: individual enrollments and
// enrollment groups, with the verbs and flags of `az iot dps enrollment` and
// `az iot dps enrollment-group`. The two kinds differ in their
// enrollmentKind (manage_enrollment_record.go); flags, checks and printing
// are in the other manage_enrollment_*.go files.

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
	"github.com/dpsd/dpsd/internal/tpm"
)

func newEnrollmentCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("enrollment", "Manage individual enrollments (az iot dps enrollment)",
		`Manage individual enrollments: one device each, attested by an X.509
certificate, a symmetric key or a TPM endorsement key.

Commands talk to the local server (./dpsd-data, or --data / DPSD_DATA) unless
--login (or DPSD_LOGIN) gives a service connection string.`, cf)
	c.AddCommand(enrollmentVerbs(e, cf, individualKind)...)
	return c
}

func newEnrollmentGroupCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("enrollment-group", "Manage enrollment groups (az iot dps enrollment-group)",
		`Manage enrollment groups: devices that share an X.509 signing certificate
(or an uploaded CA), or a group key from which each device's key derives.

Commands talk to the local server (./dpsd-data, or --data / DPSD_DATA) unless
--login (or DPSD_LOGIN) gives a service connection string.`, cf)
	c.AddCommand(enrollmentVerbs(e, cf, groupKind)...)
	c.AddCommand(computeDeviceKeyCmd(e, cf))
	return c
}

func enrollmentVerbs(e *env, cf *connFlags, k *enrollmentKind) []*cobra.Command {
	return []*cobra.Command{
		enrollmentCreateCmd(e, cf, k),
		enrollmentShowCmd(e, cf, k),
		enrollmentListCmd(e, cf, k),
		enrollmentUpdateCmd(e, cf, k),
		enrollmentDeleteCmd(e, cf, k),
	}
}

func enrollmentCreateCmd(e *env, cf *connFlags, k *enrollmentKind) *cobra.Command {
	o := &enrollOpts{kind: k}
	c := verb(e, cf, &cobra.Command{Use: "create", Short: "Create " + k.article, Example: k.help.createExample}, &o.output, func(s *session, f flags) error {
		in, err := o.validate(f, true)
		if err != nil {
			return err
		}
		if !k.group && in.att == dps.AttestationX509 && in.certCN != "" && !strings.EqualFold(in.certCN, o.id) {
			warnf(s.stderr, "the certificate's subject CN is %q but --enrollment-id is %q; the device registers with its CN as registration ID", in.certCN, o.id)
		}
		if in.att == dps.AttestationTPM {
			warnEndorsementKey(s, o.endorsementKey, o.id)
		}
		r := k.newRecord(o.id)
		r.Settings().Attestation = o.mechanism(in)
		if err := o.apply(f, in, r); err != nil {
			return err
		}
		return o.put(s, r, "")
	})
	o.addWrite(c, true)
	return c
}

// put writes the record and prints the answer.
func (o *enrollOpts) put(s *session, r enrollmentRecord, ifMatch string) error {
	raw, err := s.fetch(o.target(), svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), IfMatch: ifMatch, Body: r.body()})
	if err != nil {
		return err
	}
	return o.print(s, raw, true)
}

func enrollmentShowCmd(e *env, cf *connFlags, k *enrollmentKind) *cobra.Command {
	o := &enrollOpts{kind: k}
	c := verb(e, cf, &cobra.Command{Use: "show", Short: "Show " + k.article}, &o.output, func(s *session, _ flags) error {
		raw, err := s.fetch(o.target(), svcclient.Request{Method: http.MethodGet, Path: o.target().path("")})
		if err != nil {
			return err
		}
		if !o.showKeys.isTrue() {
			return o.print(s, raw, false)
		}
		att, err := s.fetch(o.target(), svcclient.Request{Method: http.MethodPost, Path: o.target().path("/attestationmechanism")})
		if err != nil {
			return err
		}
		merged, err := mergeAttestation(raw, att)
		if err != nil {
			return err
		}
		return o.print(s, merged, true)
	})
	f := flagsOf(c)
	o.addID(f)
	f.optBool(&o.showKeys, "show-keys", "include the symmetric keys (and certificates) of the attestation", "keys")
	return c
}

func enrollmentListCmd(e *env, cf *connFlags, k *enrollmentKind) *cobra.Command {
	o := &enrollOpts{kind: k}
	c := verb(e, cf, &cobra.Command{Use: "list", Short: "List " + k.plural}, &o.output, func(s *session, _ flags) error {
		if err := o.paging.check(); err != nil {
			return err
		}
		items, err := queryAll(s, k.target, k.collection+"/query", dps.QuerySpecification{Query: k.query}, o.paging)
		if err != nil {
			return err
		}
		return printItems(s.stdout, o.output, items, k.header, func(raw json.RawMessage) ([]string, error) {
			r, err := k.decode(raw)
			if err != nil {
				return nil, fmt.Errorf("decoding an %s: %w", k.noun, err)
			}
			return r.row(), nil
		})
	})
	f := flagsOf(c)
	o.paging.add(f)
	return c
}

func enrollmentUpdateCmd(e *env, cf *connFlags, k *enrollmentKind) *cobra.Command {
	o := &enrollOpts{kind: k}
	c := verb(e, cf, &cobra.Command{
		Use:   "update",
		Short: "Update " + k.article,
		Long: `Read the record, change what the flags say, and write it back under
If-Match with the etag just read (or --etag): if someone changed it in between,
the write fails with HTTP 412 and nothing is lost.`,
	}, &o.output, func(s *session, f flags) error {
		in, err := o.validate(f, false)
		if err != nil {
			return err
		}
		raw, err := s.fetch(o.target(), svcclient.Request{Method: http.MethodGet, Path: o.target().path("")})
		if err != nil {
			return err
		}
		r, err := k.decode(raw)
		if err != nil {
			return fmt.Errorf("decoding the %s: %w", k.noun, err)
		}
		if err := o.updateMechanism(r.Settings().Attestation, in); err != nil {
			return err
		}
		if !k.group && f.changed("endorsement-key") {
			warnEndorsementKey(s, o.endorsementKey, o.id)
		}
		if err := o.apply(f, in, r); err != nil {
			return err
		}
		return o.put(s, r, cmp.Or(o.etag, r.Settings().Etag, "*"))
	})
	o.addWrite(c, false)
	return c
}

func enrollmentDeleteCmd(e *env, cf *connFlags, k *enrollmentKind) *cobra.Command {
	o := &enrollOpts{kind: k}
	c := verb(e, cf, &cobra.Command{
		Use:   "delete",
		Short: "Delete " + k.article,
		Long: `Delete the record (only if it still has --etag, when given). Devices
already provisioned stay in their IoT hub; their registration records stay
until 'dpsd registration delete'.`,
	}, nil, func(s *session, _ flags) error {
		_, err := s.do(o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.target().path(""), IfMatch: o.etag}, nil)
		return err
	})
	f := flagsOf(c)
	o.addID(f)
	f.str(&o.etag, "etag", "e", "delete only if the record still has this etag")
	return c
}

// warnEndorsementKey warns about an endorsement key no device can register
// with, and about a registration ID that is not the TPM's default (the one
// the Azure device SDKs use unless given another).
func warnEndorsementKey(s *session, ek, id string) {
	p, err := tpm.ParsePublicBase64(ek)
	switch {
	case err != nil:
		warnf(s.stderr, "--endorsement-key is not a TPM public key (%v); a TPM device cannot register against it: give the base64 TPM2B_PUBLIC the TPM reports", err)
	case !strings.EqualFold(p.RegistrationID(), id):
		warnf(s.stderr, "the TPM's default registration ID, derived from --endorsement-key, is %q but --enrollment-id is %q; the Azure device SDKs register with the default unless given another", p.RegistrationID(), id)
	}
}
