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

func (o *regOpts) target() target { return registrations.of(o.id) }

func newRegistrationCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("registration", "Manage device registration records (az iot dps registration)",
		`Show, list and delete registration records: the outcome of a device's last
registration (status, assigned hub, device ID, and the twin dpsd applied in
the hub). Deleting a record makes the device's next registration an initial
assignment; it does not touch the device in its hub. 'dpsd registration
explain' adds the device's latest refusals from the refusal journal, in words.`, cf)
	c.AddCommand(registrationShowCmd(e, cf), registrationListCmd(e, cf), registrationDeleteCmd(e, cf), registrationExplainCmd(e, cf))
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
	out = append(out, twinFields("appliedTwin", r.AppliedTwin)...)
	return append(out, [2]string{"created", timeOf(r.CreatedDateTimeUtc)}, [2]string{"lastUpdated", timeOf(r.LastUpdatedDateTimeUtc)}, [2]string{"etag", r.Etag})
}

func registrationRow(r *dps.DeviceRegistrationState) []string {
	return []string{r.RegistrationID, dash(r.Status), dash(r.Substatus), dash(r.DeviceID), dash(r.AssignedHub), timeOf(r.LastUpdatedDateTimeUtc)}
}

func registrationShowCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	c := verb(e, cf, &cobra.Command{Use: "show", Short: "Show a device's registration record"}, &o.output, func(s *session, _ flags) error {
		return show(s, o.target(), svcclient.Request{Method: http.MethodGet, Path: o.target().path("")}, o.output, "registration record", registrationFields)
	})
	o.addID(c)
	return c
}

func registrationListCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	c := verb(e, cf, &cobra.Command{Use: "list", Short: "List the registration records of an enrollment group"}, &o.output, func(s *session, _ flags) error {
		if err := o.paging.check(); err != nil {
			return err
		}
		items, err := queryAll(s, groupKind.of(o.groupID), registrations.collection+"/"+url.PathEscape(o.groupID)+"/query", dps.QuerySpecification{Query: "SELECT *"}, o.paging)
		if err != nil {
			return err
		}
		header := []string{"REGISTRATION ID", "STATUS", "SUBSTATUS", "DEVICE ID", "ASSIGNED HUB", "LAST UPDATED"}
		return printItems(s.stdout, o.output, items, header, func(raw json.RawMessage) ([]string, error) {
			var r dps.DeviceRegistrationState
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("decoding a registration record: %w", err)
			}
			return registrationRow(&r), nil
		})
	})
	f := flagsOf(c)
	f.str(&o.groupID, "group-id", "", "the enrollment group whose records to list", "gid", "enrollment-id", "eid")
	f.required("group-id")
	o.paging.add(f)
	return c
}

func registrationDeleteCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	c := verb(e, cf, &cobra.Command{Use: "delete", Short: "Delete a device's registration record"}, nil, func(s *session, _ flags) error {
		_, err := s.do(o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.target().path(""), IfMatch: o.etag}, nil)
		return err
	})
	o.addID(c)
	flagsOf(c).str(&o.etag, "etag", "e", "delete only if the record still has this etag")
	return c
}
