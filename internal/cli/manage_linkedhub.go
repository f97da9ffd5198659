package cli

// dpsd linked-hub: the IoT hubs devices can be assigned to (az iot dps
// linked-hub). A hub is named by its host name.

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/svcclient"
)

type hubOpts struct {
	name       string // host name
	connString string
	location   string
	weight     int
	apply      optBool
	registry   string
	webhookURL string
	secret     string
	etag       string
	output     string
}

func (o *hubOpts) target() target { return linkedHubs.of(o.name) }

func newLinkedHubCmd(e *env) *cobra.Command {
	cf := &connFlags{}
	c := nounCmd("linked-hub", "Manage linked IoT hubs (az iot dps linked-hub)",
		`Manage the IoT hubs devices can be assigned to. A linked hub is named by its
host name (myhub.azure-devices.net); its connection string (a hub policy with
registry write rights) lets dpsd create the device in the hub. Reads never
return the hub's key.

--device-registry says what dpsd does when it assigns a device to the hub:
`+registryKinds("\n  ")+`
See docs/registry-webhook.md for the webhook's events and signature.`, cf)
	c.AddCommand(hubCreateCmd(e, cf), hubListCmd(e, cf), hubShowCmd(e, cf), hubUpdateCmd(e, cf), hubDeleteCmd(e, cf))
	return c
}

// addLinkedHub adds --linked-hub, which takes the host name (or, as in az,
// the hub's short name when it matches one linked hub).
func (o *hubOpts) addLinkedHub(c *cobra.Command) {
	f := flagsOf(c)
	f.str(&o.name, "linked-hub", "", "host name of the linked hub (myhub.azure-devices.net), or its short name (myhub)")
	f.required("linked-hub")
}

// resolve turns a short hub name into the host name of the one linked hub
// it names.
func (o *hubOpts) resolve(s *session) error {
	if strings.Contains(o.name, ".") {
		return nil
	}
	var list dps.LinkedHubList
	if _, err := s.do(o.target(), svcclient.Request{Method: http.MethodGet, Path: linkedHubs.collection}, &list); err != nil {
		return err
	}
	var match []string
	for _, h := range list.Value {
		short, _, _ := strings.Cut(h.Name, ".")
		if strings.EqualFold(short, o.name) || strings.EqualFold(h.Name, o.name) {
			match = append(match, h.Name)
		}
	}
	switch len(match) {
	case 1:
		o.name = match[0]
		return nil
	case 0:
		return withHint(fmt.Errorf("no linked IoT hub is named %q", o.name), "'dpsd linked-hub list' lists the linked hubs by host name")
	}
	return withHint(fmt.Errorf("%q matches several linked hubs: %s", o.name, strings.Join(match, ", ")), "give the host name with --linked-hub")
}

func linkedHubFields(h *dps.LinkedHub) [][2]string {
	out := [][2]string{
		{"name", h.Name},
		{"connectionString", dash(h.ConnectionString)},
		{"location", dash(h.Location)},
		{"allocationWeight", fmt.Sprint(h.AllocationWeight)},
		{"applyAllocationPolicy", fmt.Sprint(h.ApplyAllocationPolicy)},
		{"deviceRegistry", cmp.Or(h.DeviceRegistry, string(hub.KindNone))},
	}
	if h.RegistryWebhookURL != "" {
		out = append(out, [2]string{"registryWebhookUrl", h.RegistryWebhookURL}, [2]string{"registryWebhookSecret", dash(h.RegistryWebhookSecret)})
	}
	return append(out, [2]string{"etag", h.Etag})
}

// registryKinds lists the device registries with what each does.
func registryKinds(sep string) string {
	var b strings.Builder
	for _, k := range hub.Kinds {
		fmt.Fprintf(&b, "%s%s: %s", sep, k.Kind, k.Description)
	}
	return b.String()
}

// addRegistry adds the device registry flags.
func (o *hubOpts) addRegistry(f flags) {
	f.str(&o.registry, "device-registry", "", "where dpsd creates the devices it assigns to the hub: none (the default), azure-iothub (the hub's registry API, with --connection-string) or webhook (a signed POST to --registry-webhook-url)", "dr")
	f.str(&o.webhookURL, "registry-webhook-url", "", "with --device-registry webhook: the https:// URL dpsd POSTs each assignment to (docs/registry-webhook.md)", "rwu")
	f.str(&o.secret, "registry-webhook-secret", "", "with --device-registry webhook: the secret (16 characters or more) that keys the HMAC-SHA256 signature of each event", "rws")
}

// checkRegistry validates the device registry flags; create says whether
// the hub is new (and so has nothing to keep).
func (o *hubOpts) checkRegistry(create bool) error {
	if o.registry != "" {
		k, err := hub.ParseKind(o.registry)
		if err != nil {
			return withHint(fmt.Errorf("--device-registry %q is not none, azure-iothub or webhook", o.registry), "%s", strings.TrimPrefix(registryKinds("\n"), "\n"))
		}
		o.registry = string(k)
	}
	webhook := o.registry == string(hub.KindWebhook)
	if !webhook && (o.webhookURL != "" || o.secret != "") && (create || o.registry != "") {
		return withHint(errors.New("--registry-webhook-url and --registry-webhook-secret go with --device-registry webhook"), "add --device-registry webhook, or leave them out")
	}
	if o.webhookURL != "" {
		if _, err := outbound.CheckURL(o.webhookURL); err != nil {
			return withHint(fmt.Errorf("--registry-webhook-url: %v", err), "give the https:// URL of your receiver; plain http:// only to 127.0.0.1, ::1 or localhost")
		}
	}
	if o.secret != "" && len(o.secret) < hub.MinWebhookSecretLength {
		return withHint(fmt.Errorf("--registry-webhook-secret is shorter than %d characters", hub.MinWebhookSecretLength), "use a long random secret, e.g. openssl rand -base64 32")
	}
	if create && webhook && (o.webhookURL == "" || o.secret == "") {
		return withHint(errors.New("--device-registry webhook needs --registry-webhook-url and --registry-webhook-secret"), "dpsd POSTs each assignment to the URL, signed with the secret (docs/registry-webhook.md)")
	}
	if create && o.registry == string(hub.KindAzureIoTHub) && o.connString == "" {
		return withHint(errors.New("--device-registry azure-iothub needs --connection-string"), "give the connection string of a hub policy with registry write rights, e.g. iothubowner")
	}
	return nil
}

// call runs one request and prints the linked hub it returns.
func (o *hubOpts) call(s *session, req svcclient.Request) error {
	return show(s, o.target(), req, o.output, "linked hub", linkedHubFields)
}

func (o *hubOpts) checkWeight(f flags) error {
	if f.changed("allocation-weight") && (o.weight < 1 || o.weight > 1000) {
		return withHint(fmt.Errorf("--allocation-weight %d is outside 1 to 1000", o.weight), "a hub with a higher weight gets proportionally more devices")
	}
	return nil
}

func (o *hubOpts) body(f flags) dps.LinkedHubBody {
	b := dps.LinkedHubBody{ConnectionString: o.connString, Location: o.location,
		DeviceRegistry: o.registry, RegistryWebhookURL: o.webhookURL, RegistryWebhookSecret: o.secret}
	if f.changed("allocation-weight") {
		w := o.weight
		b.AllocationWeight = &w
	}
	if o.apply.set {
		v := o.apply.v
		b.ApplyAllocationPolicy = &v
	}
	return b
}

// checkConnString validates --connection-string and returns its HostName.
func checkConnString(s string) (string, error) {
	cs, err := sas.ParseConnectionString(s)
	if err != nil {
		return "", withHint(fmt.Errorf("--connection-string: %v", err), "give the hub's connection string: HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=...")
	}
	if cs.SharedAccessKeyName == "" || cs.SharedAccessKey == "" {
		return "", withHint(errors.New("--connection-string has no SharedAccessKeyName or SharedAccessKey"), "use the connection string of a hub policy with registry write rights, e.g. iothubowner")
	}
	if err := dps.ValidateHostName(cs.HostName); err != nil {
		return "", withHint(fmt.Errorf("--connection-string: %v", err), "check HostName in the connection string")
	}
	return cs.HostName, nil
}

func hubCreateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &hubOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "create",
		Short: "Link an IoT hub",
		Example: `  dpsd linked-hub create --connection-string "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=..."
  dpsd linked-hub create --connection-string "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=..." --device-registry azure-iothub
  dpsd linked-hub create --hub-name broker.factory.example --device-registry webhook --registry-webhook-url https://registry.factory.example/dpsd --registry-webhook-secret "$SECRET"
  dpsd linked-hub create --hub-name myhub.azure-devices.net --allocation-weight 2`,
	}, &o.output, func(s *session, f flags) error {
		if o.connString == "" && o.name == "" {
			return withHint(errors.New("give --connection-string or --hub-name"), "the hub's connection string lets dpsd create devices in it; --hub-name alone links the hub by host name without credentials")
		}
		if o.connString != "" {
			host, err := checkConnString(o.connString)
			if err != nil {
				return err
			}
			if o.name != "" && !strings.EqualFold(o.name, host) {
				return withHint(fmt.Errorf("--hub-name %q does not match the connection string's HostName %q", o.name, host), "omit --hub-name: the connection string names the hub")
			}
			o.name = host
		}
		if err := dps.ValidateHostName(o.name); err != nil {
			return withHint(fmt.Errorf("--hub-name: %v", err), "give the hub's host name, e.g. myhub.azure-devices.net")
		}
		if err := o.checkWeight(f); err != nil {
			return err
		}
		if err := o.checkRegistry(true); err != nil {
			return err
		}
		return o.call(s, svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), Body: o.body(f)})
	})
	f := flagsOf(c)
	f.str(&o.connString, "connection-string", "", "connection string of the hub (a policy with registry write rights); its HostName names the hub, and may carry a port", "cs")
	f.str(&o.name, "hub-name", "", "host name of the hub, when no connection string is given", "hn")
	f.str(&o.location, "location", "l", "the hub's location (used by the geoLatency policy)")
	f.int(&o.weight, "allocation-weight", "weight of the hub under the hashed policy, 1 to 1000 (default 1)")
	f.optBool(&o.apply, "apply-allocation-policy", "the hub takes part in allocation (true|false; bare: true; default true)")
	o.addRegistry(f)
	return c
}

func hubListCmd(e *env, cf *connFlags) *cobra.Command {
	return listValueCmd(e, cf, "List the linked IoT hubs", linkedHubs,
		[]string{"NAME", "WEIGHT", "APPLY POLICY", "LOCATION", "REGISTRY", "CONNECTION STRING"},
		func(h dps.LinkedHub) []string {
			return []string{h.Name, fmt.Sprint(h.AllocationWeight), fmt.Sprint(h.ApplyAllocationPolicy), dash(h.Location), cmp.Or(h.DeviceRegistry, string(hub.KindNone)), dash(h.ConnectionString)}
		})
}

func hubShowCmd(e *env, cf *connFlags) *cobra.Command {
	o := &hubOpts{}
	c := verb(e, cf, &cobra.Command{Use: "show", Short: "Show a linked IoT hub"}, &o.output, func(s *session, _ flags) error {
		if err := o.resolve(s); err != nil {
			return err
		}
		return o.call(s, svcclient.Request{Method: http.MethodGet, Path: o.target().path("")})
	})
	o.addLinkedHub(c)
	return c
}

func hubUpdateCmd(e *env, cf *connFlags) *cobra.Command {
	o := &hubOpts{}
	c := verb(e, cf, &cobra.Command{
		Use:   "update",
		Short: "Change a linked IoT hub's weight, allocation participation, location, connection string or device registry",
	}, &o.output, func(s *session, f flags) error {
		if o.connString != "" {
			if _, err := checkConnString(o.connString); err != nil {
				return err
			}
		}
		if err := o.checkWeight(f); err != nil {
			return err
		}
		if err := o.checkRegistry(false); err != nil {
			return err
		}
		if !f.changed("allocation-weight") && !o.apply.set && o.location == "" && o.connString == "" && o.registry == "" && o.webhookURL == "" && o.secret == "" {
			return withHint(errors.New("nothing to update"), "give --allocation-weight, --apply-allocation-policy, --location, --connection-string or --device-registry")
		}
		if err := o.resolve(s); err != nil {
			return err
		}
		etag := o.etag
		if etag == "" {
			var cur dps.LinkedHub
			if _, err := s.do(o.target(), svcclient.Request{Method: http.MethodGet, Path: o.target().path("")}, &cur); err != nil {
				return err
			}
			etag = cmp.Or(cur.Etag, "*")
		}
		return o.call(s, svcclient.Request{Method: http.MethodPut, Path: o.target().path(""), IfMatch: etag, Body: o.body(f)})
	})
	o.addLinkedHub(c)
	f := flagsOf(c)
	f.str(&o.connString, "connection-string", "", "a new connection string for the hub (same HostName)", "cs")
	f.str(&o.location, "location", "l", "the hub's location")
	f.int(&o.weight, "allocation-weight", "weight of the hub under the hashed policy, 1 to 1000")
	f.optBool(&o.apply, "apply-allocation-policy", "the hub takes part in allocation (true|false; bare: true)")
	o.addRegistry(f)
	f.str(&o.etag, "etag", "e", "update only if the hub still has this etag (default: the etag just read)")
	return c
}

func hubDeleteCmd(e *env, cf *connFlags) *cobra.Command {
	o := &hubOpts{}
	c := verb(e, cf, &cobra.Command{Use: "delete", Short: "Unlink an IoT hub"}, nil, func(s *session, _ flags) error {
		if err := o.resolve(s); err != nil {
			return err
		}
		_, err := s.do(o.target(), svcclient.Request{Method: http.MethodDelete, Path: o.target().path(""), IfMatch: o.etag}, nil)
		return err
	})
	o.addLinkedHub(c)
	flagsOf(c).str(&o.etag, "etag", "e", "delete only if the hub still has this etag")
	return c
}
