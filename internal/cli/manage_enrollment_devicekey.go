package cli

// dpsd enrollment-group compute-device-key: a device's key, derived from its
// symmetric-key group's key.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/svcclient"
)

func computeDeviceKeyCmd(e *env, cf *connFlags) *cobra.Command {
	o := &enrollOpts{kind: groupKind}
	var key, regID string
	c := verb(e, cf, &cobra.Command{
		Use:   "compute-device-key",
		Short: "Derive a device's symmetric key from its group key",
		Long: `Print the symmetric key of one device of a symmetric-key enrollment group:
base64(HMAC-SHA256(group key, registration ID)). Give the group key with --key,
or the group with --enrollment-id to use its primary key.`,
		Example: `  dpsd enrollment-group compute-device-key --key GROUPKEY --registration-id sensor-7
  dpsd enrollment-group compute-device-key --enrollment-id sensors --registration-id sensor-7`,
	}, &o.output, func(s *session, _ flags) error {
		if err := dps.ValidateID("registration ID", regID); err != nil {
			return withHint(fmt.Errorf("--registration-id: %v", err), "give the device's registration ID")
		}
		if key == "" && o.id == "" {
			return withHint(errors.New("give --key or --enrollment-id"), "--key takes the group's key; --enrollment-id reads the group's primary key from the server")
		}
		if key == "" {
			var att dps.AttestationMechanism
			if _, err := s.do(o.target(), svcclient.Request{Method: http.MethodPost, Path: o.target().path("/attestationmechanism")}, &att); err != nil {
				return err
			}
			if att.SymmetricKey == nil || att.SymmetricKey.PrimaryKey == "" {
				return withHint(fmt.Errorf("enrollment group %q uses %s attestation, not a symmetric key", o.id, att.Type), "device keys derive only from symmetric-key groups")
			}
			key = att.SymmetricKey.PrimaryKey
		}
		k, err := sas.DecodeKey(key)
		if err != nil {
			return withHint(errors.New("--key is not base64"), "give the group's primary or secondary key as 'dpsd enrollment-group show --show-keys' prints it")
		}
		dk := base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(k, regID))
		if o.output == outputJSON {
			return writeJSON(s.stdout, dk)
		}
		_, err = fmt.Fprintln(s.stdout, dk)
		return err
	})
	f := flagsOf(c)
	f.str(&key, "key", "", "the group's symmetric key, base64", "symmetric-key")
	f.str(&regID, "registration-id", "", "the device's registration ID", "rid")
	f.str(&o.id, "enrollment-id", "", "read the key of this enrollment group from the server (instead of --key)", "eid", "group-id", "gid")
	f.required("registration-id")
	return c
}
