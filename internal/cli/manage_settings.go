package cli

// dpsd show and dpsd update: the instance itself (az iot dps show / update).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
)

var settingsTarget = target{cmd: "show", noun: "instance"}

func printSettings(e *env, output string, raw json.RawMessage) error {
	if output == outputJSON {
		return writeRaw(e.stdout, raw)
	}
	var s dps.Settings
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("decoding the settings: %w", err)
	}
	return writeFields(e.stdout, [][2]string{
		{"idScope", s.IDScope},
		{"allocationPolicy", s.AllocationPolicy},
		{"deviceProvisioningHostName", dash(s.DeviceProvisioningHostName)},
		{"serviceOperationsHostName", dash(s.ServiceOperationsHostName)},
	})
}

func newInstanceShowCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	var output string
	c := &cobra.Command{
		Use:   "show",
		Short: "Show the instance: ID scope, default allocation policy, endpoints (az iot dps show)",
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(output); err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, settingsTarget, svcclient.Request{Method: http.MethodGet, Path: "/settings"}, &raw); err != nil {
			return err
		}
		return printSettings(e, output, raw)
	}
	cf.add(c)
	addOutputFlag(c, &output)
	return leafCmd(c)
}

func newInstanceUpdateCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	var output, policy string
	c := &cobra.Command{
		Use:     "update",
		Short:   "Change the instance's default allocation policy (az iot dps update)",
		Example: `  dpsd update --allocation-policy static`,
	}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(output); err != nil {
			return err
		}
		p, err := oneOf("--allocation-policy", policy, dps.AllocationHashed, dps.AllocationGeoLatency, dps.AllocationStatic)
		if err != nil {
			return withHint(errors.Unwrap(err), "the instance default is hashed, geoLatency or static; custom is set per enrollment with 'dpsd enrollment update --allocation-policy custom --webhook-url URL'")
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, target{cmd: "update", noun: "instance"}, svcclient.Request{Method: http.MethodPatch, Path: "/settings", Body: dps.Settings{AllocationPolicy: p}}, &raw); err != nil {
			return err
		}
		return printSettings(e, output, raw)
	}
	cf.add(c)
	f := flagsOf(c)
	f.str(&policy, "allocation-policy", "", "default allocation policy of enrollments that set none: hashed, geoLatency or static", "ap")
	f.required("allocation-policy")
	addOutputFlag(c, &output)
	return leafCmd(c)
}
