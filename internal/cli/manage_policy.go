package cli

// dpsd policy: shared access policies of the service API (az iot dps policy).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/svcclient"
)

type policyOpts struct {
	name                     string
	rights                   listValue
	primaryKey, secondaryKey string
	output                   string
}

func (o *policyOpts) target() target { return policies.of(o.name) }

func newPolicyCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("policy", "Manage shared access policies (az iot dps policy)",
		`Manage the shared access policies of the service API. Rights:
`+strings.Join(dps.AllRights, ", ")+`.
'dpsd policy show' prints a policy's keys and a connection string for --login.`, cf)
	c.AddCommand(policyCreateCmd(e, cf), policyListCmd(e, cf), policyShowCmd(e, cf), policyUpdateCmd(e, cf), policyDeleteCmd(e, cf))
	return c
}

func (o *policyOpts) addName(c *cobra.Command) {
	f := flagsOf(c)
	f.str(&o.name, "policy-name", "", "name of the shared access policy", "pn")
	f.required("policy-name")
}

func (o *policyOpts) addWrite(c *cobra.Command, create bool) {
	o.addName(c)
	f := flagsOf(c)
	f.list(&o.rights, "rights", "rights, space- or comma-separated: "+strings.Join(dps.AllRights, " "), "r")
	if create {
		f.required("rights")
	}
	f.str(&o.primaryKey, "primary-key", "", "primary key, base64 of 16 to 64 bytes (default: generated)", "pk")
	f.str(&o.secondaryKey, "secondary-key", "", "secondary key, base64 of 16 to 64 bytes (default: generated)", "sk")
}

// validate checks the flags and returns the request body.
func (o *policyOpts) validate(f flags) (*dps.AccessPolicy, error) {
	if err := dps.ValidateCAName(o.name); err != nil {
		return nil, withHint(fmt.Errorf("--policy-name: %v", strings.TrimPrefix(err.Error(), "certificate name ")), "a policy name has letters, digits and - . _")
	}
	body := &dps.AccessPolicy{KeyName: o.name, PrimaryKey: o.primaryKey, SecondaryKey: o.secondaryKey}
	if f.changed("rights") {
		rights, err := dps.ParseRights(strings.Join(o.rights.items, ","))
		if err != nil {
			return nil, withHint(fmt.Errorf("--rights: %v", err), "e.g. --rights EnrollmentRead EnrollmentWrite")
		}
		body.Rights = strings.Join(rights, ", ")
	}
	for _, k := range []struct{ flag, v string }{{"--primary-key", o.primaryKey}, {"--secondary-key", o.secondaryKey}} {
		if k.v == "" {
			continue
		}
		if b, err := sas.DecodeKey(k.v); err != nil || len(b) < 16 || len(b) > 64 {
			return nil, withHint(fmt.Errorf("%s is not base64 of 16 to 64 bytes", k.flag), "omit %s to have the server generate a key", k.flag)
		}
	}
	return body, nil
}

// call runs one request and prints the policy it returns, with its keys and
// connection strings for --login.
func (o *policyOpts) call(s *session, req svcclient.Request) error {
	raw, err := s.fetch(o.target(), req)
	if err != nil {
		return err
	}
	var p dps.AccessPolicy
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("decoding the policy: %w", err)
	}
	cs := func(key string) string {
		if key == "" {
			return ""
		}
		c := sas.ConnectionString{HostName: s.cl.Host(), SharedAccessKeyName: p.KeyName, SharedAccessKey: key}
		return c.String()
	}
	if o.output == outputJSON {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("decoding the policy: %w", err)
		}
		m["connectionString"] = cs(p.PrimaryKey)
		m["secondaryConnectionString"] = cs(p.SecondaryKey)
		return writeJSON(s.stdout, m)
	}
	return writeFields(s.stdout, [][2]string{
		{"keyName", p.KeyName},
		{"rights", p.Rights},
		{"primaryKey", dash(p.PrimaryKey)},
		{"secondaryKey", dash(p.SecondaryKey)},
		{"connectionString", dash(cs(p.PrimaryKey))},
		{"secondaryConnectionString", dash(cs(p.SecondaryKey))},
	})
}

func policyCreateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &policyOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:     "create",
		Short:   "Create a shared access policy",
		Example: `  dpsd policy create --policy-name enrollment-reader --rights EnrollmentRead RegistrationStatusRead`,
	}, &o.output, func(s *session, f flags) error {
		body, err := o.validate(f)
		if err != nil {
			return err
		}
		return o.call(s, svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), Body: body})
	})
	o.addWrite(c, true)
	return c
}

func policyListCmd(e *env, cf *connFlags) *cobra.Command {
	return listValueCmd(e, cf, "List the shared access policies and their rights", policies,
		[]string{"NAME", "RIGHTS"},
		func(p dps.AccessPolicy) []string { return []string{p.KeyName, p.Rights} })
}

func policyShowCmd(e *env, cf *connFlags) *cobra.Command {
	o := &policyOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "show",
		Short: "Show a shared access policy, its keys and connection strings",
	}, &o.output, func(s *session, _ flags) error {
		return o.call(s, svcclient.Request{Method: http.MethodGet, Path: o.target().path("")})
	})
	o.addName(c)
	return c
}

func policyUpdateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &policyOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "update",
		Short: "Change a shared access policy's rights or keys",
		Example: `  dpsd policy update --policy-name enrollment-reader --rights EnrollmentRead
  dpsd policy update --policy-name enrollment-reader --primary-key "$(openssl rand -base64 32)"`,
	}, &o.output, func(s *session, f flags) error {
		body, err := o.validate(f)
		if err != nil {
			return err
		}
		if body.Rights == "" && body.PrimaryKey == "" && body.SecondaryKey == "" {
			return withHint(errors.New("nothing to update"), "give --rights, --primary-key or --secondary-key")
		}
		// Policies carry no etag: check the policy exists, then overwrite
		// the fields given (the server keeps the others).
		if _, err := s.do(o.target(), svcclient.Request{Method: http.MethodGet, Path: o.target().path("")}, nil); err != nil {
			return err
		}
		return o.call(s, svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), IfMatch: "*", Body: body})
	})
	o.addWrite(c, false)
	return c
}

func policyDeleteCmd(e *env, cf *connFlags) *cobra.Command {
	o := &policyOpts{}
	c := verb(e, cf, &cobra.Command{Use: "delete", Short: "Delete a shared access policy"}, nil, func(s *session, _ flags) error {
		_, err := s.do(o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.target().path("")}, nil)
		return err
	})
	o.addName(c)
	return c
}
