package cli

// dpsd show and dpsd update: the instance itself (az iot dps show / update).

import (
	"errors"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
)

const settingsPath = "/settings"

func settingsFields(s *dps.Settings) [][2]string {
	return [][2]string{
		{"idScope", s.IDScope},
		{"allocationPolicy", s.AllocationPolicy},
		{"deviceProvisioningHostName", dash(s.DeviceProvisioningHostName)},
		{"serviceOperationsHostName", dash(s.ServiceOperationsHostName)},
	}
}

func newInstanceShowCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	var output string
	c := verb(e, cf, &cobra.Command{
		Use:   "show",
		Short: "Show the instance: ID scope, default allocation policy, endpoints (az iot dps show)",
	}, &output, func(s *session, _ flags) error {
		return show(s, target{cmd: "show", noun: "instance"}, svcclient.Request{Method: http.MethodGet, Path: settingsPath}, output, "settings", settingsFields)
	})
	cf.add(c)
	return c
}

func newInstanceUpdateCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	var output, policy string
	c := verb(e, cf, &cobra.Command{
		Use:     "update",
		Short:   "Change the instance's default allocation policy (az iot dps update)",
		Example: `  dpsd update --allocation-policy static`,
	}, &output, func(s *session, _ flags) error {
		p, err := oneOf("--allocation-policy", policy, dps.AllocationHashed, dps.AllocationGeoLatency, dps.AllocationStatic)
		if err != nil {
			return withHint(errors.Unwrap(err), "the instance default is hashed, geoLatency or static; custom is set per enrollment with 'dpsd enrollment update --allocation-policy custom --webhook-url URL'")
		}
		req := svcclient.Request{Method: http.MethodPatch, Path: settingsPath, Body: dps.Settings{AllocationPolicy: p}}
		return show(s, target{cmd: "update", noun: "instance"}, req, output, "settings", settingsFields)
	})
	cf.add(c)
	f := flagsOf(c)
	f.str(&policy, "allocation-policy", "", "default allocation policy of enrollments that set none: hashed, geoLatency or static", "ap")
	f.required("allocation-policy")
	return c
}
