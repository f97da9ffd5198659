package cli

// dpsd registration: the registration records devices leave when they
// provision (az iot dps registration / enrollment-group registration).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
)

type regOpts struct {
	id      string
	groupID string
	etag    string
	output  string
	paging  paging
}

func (o *regOpts) target() target {
	return target{cmd: "registration", noun: "registration record", idFlag: "--registration-id", id: o.id}
}

func newRegistrationCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("registration", "Manage device registration records (az iot dps registration)",
		`Show, list and delete registration records: the outcome of a device's last
registration (status, assigned hub, device ID). Deleting a record makes the
device's next registration an initial assignment; it does not touch the device
in its hub.`, cf)
	c.AddCommand(registrationShowCmd(e, cf), registrationListCmd(e, cf), registrationDeleteCmd(e, cf))
	return c
}

func (o *regOpts) addID(c *cobra.Command) {
	f := flagsOf(c)
	f.str(&o.id, "registration-id", "", "the device's registration ID", "rid")
	f.required("registration-id")
}

func registrationFields(r *dps.DeviceRegistrationState) [][2]string {
	out := [][2]string{
		{"registrationId", r.RegistrationID},
		{"status", dash(r.Status)},
		{"substatus", dash(r.Substatus)},
		{"deviceId", dash(r.DeviceID)},
		{"assignedHub", dash(r.AssignedHub)},
	}
	if r.ErrorCode != 0 || r.ErrorMessage != "" {
		out = append(out, [2]string{"error", fmt.Sprintf("%d %s", r.ErrorCode, r.ErrorMessage)})
	}
	if s := compactJSON(r.Payload); s != "" {
		out = append(out, [2]string{"payload", s})
	}
	return append(out, [2]string{"created", timeOf(r.CreatedDateTimeUtc)}, [2]string{"lastUpdated", timeOf(r.LastUpdatedDateTimeUtc)}, [2]string{"etag", r.Etag})
}

func registrationShowCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	c := &cobra.Command{Use: "show", Short: "Show a device's registration record"}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if _, err := do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodGet, Path: "/registrations/" + url.PathEscape(o.id)}, &raw); err != nil {
			return err
		}
		if o.output == outputJSON {
			return writeRaw(e.stdout, raw)
		}
		var r dps.DeviceRegistrationState
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("decoding the registration record: %w", err)
		}
		return writeFields(e.stdout, registrationFields(&r))
	}
	o.addID(c)
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func registrationListCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	c := &cobra.Command{Use: "list", Short: "List the registration records of an enrollment group"}
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := checkOutput(o.output); err != nil {
			return err
		}
		if err := o.paging.check(); err != nil {
			return err
		}
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		t := target{cmd: "enrollment-group", noun: "enrollment group", idFlag: "--enrollment-id", id: o.groupID}
		items, err := queryAll(ctx, cl, t, "/registrations/"+url.PathEscape(o.groupID)+"/query", dps.QuerySpecification{Query: "SELECT *"}, o.paging)
		if err != nil {
			return err
		}
		if o.output == outputJSON {
			return writeJSON(e.stdout, items)
		}
		var rows [][]string
		for _, raw := range items {
			var r dps.DeviceRegistrationState
			if err := json.Unmarshal(raw, &r); err != nil {
				return fmt.Errorf("decoding a registration record: %w", err)
			}
			rows = append(rows, []string{r.RegistrationID, dash(r.Status), dash(r.Substatus), dash(r.DeviceID), dash(r.AssignedHub), timeOf(r.LastUpdatedDateTimeUtc)})
		}
		return writeTable(e.stdout, []string{"REGISTRATION ID", "STATUS", "SUBSTATUS", "DEVICE ID", "ASSIGNED HUB", "LAST UPDATED"}, rows)
	}
	f := flagsOf(c)
	f.str(&o.groupID, "group-id", "", "the enrollment group whose records to list", "gid", "enrollment-id", "eid")
	f.required("group-id")
	o.paging.add(f)
	addOutputFlag(c, &o.output)
	return leafCmd(c)
}

func registrationDeleteCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	c := &cobra.Command{Use: "delete", Short: "Delete a device's registration record"}
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		cl, err := cf.client(ctx, e.getenv)
		if err != nil {
			return err
		}
		_, err = do(ctx, cl, o.target(), svcclient.Request{Method: http.MethodDelete, Path: "/registrations/" + url.PathEscape(o.id), IfMatch: o.etag}, nil)
		return err
	}
	o.addID(c)
	flagsOf(c).str(&o.etag, "etag", "e", "delete only if the record still has this etag")
	return leafCmd(c)
}
