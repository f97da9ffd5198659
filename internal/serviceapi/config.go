package serviceapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/enrollment"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/outbound"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// Linked hubs, shared access policies and settings: the instance's
// configuration, all behind the ServiceConfig right.

var (
	linkedHubs = dpserr.Resource{Noun: "linked IoT hub", NotFound: dpserr.CodeLinkedHubNotFound,
		Exists: "IoT hub %q is already linked; to change it, send If-Match with its etag"}
	policies = dpserr.Resource{Noun: "shared access policy", NotFound: dpserr.CodePolicyNotFound,
		Exists: "shared access policy %q already exists; to change it, send If-Match with its etag"}
)

// maskedSecret stands for a registry webhook secret in reads.
const maskedSecret = "****"

// LinkedHubView renders a linked hub; the hub's key and the registry
// webhook's secret (and its URL's query, which may hold a key) are never
// returned.
func LinkedHubView(h *store.LinkedHub) dps.LinkedHub {
	v := dps.LinkedHub{Name: h.Name, Location: h.Location, AllocationWeight: h.AllocationWeight, ApplyAllocationPolicy: h.ApplyAllocationPolicy,
		DeviceRegistry: cmp.Or(h.DeviceRegistry, string(hub.KindNone)), Etag: h.Etag}
	if h.ConnectionString != "" {
		if cs, err := sas.ParseConnectionString(h.ConnectionString); err == nil {
			v.ConnectionString = cs.Masked()
		}
	}
	if h.RegistryWebhookURL != "" {
		v.RegistryWebhookURL = outbound.Redact(h.RegistryWebhookURL)
	}
	if h.RegistryWebhookSecret != "" {
		v.RegistryWebhookSecret = maskedSecret
	}
	return v
}

// putLinkedHub links a hub, or with If-Match updates it; fields the body
// leaves out keep their value (defaults on create: weight 1, policy applied).
func (a *API) putLinkedHub(w http.ResponseWriter, r *http.Request, p []string) error {
	name := p[0]
	if err := dps.ValidateHostName(name); err != nil {
		return dpserr.BadRequest("%v", err)
	}
	var body dps.LinkedHubBody
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	if body.Name != "" && !strings.EqualFold(body.Name, name) {
		return dpserr.BadRequest("name %q in the body does not match %q in the URL", body.Name, name)
	}
	h := &store.LinkedHub{Name: name, AllocationWeight: 1, ApplyAllocationPolicy: true}
	ifMatch := httpx.IfMatch(r)
	if ifMatch != "" {
		prev, err := a.Store.LinkedHub(r.Context(), name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return dpserr.FromStore(err, linkedHubs, name)
		}
		if prev != nil {
			h = prev
		}
	}
	if body.ConnectionString != "" {
		cs, err := sas.ParseConnectionString(keepMaskedKey(body.ConnectionString, h.ConnectionString))
		if err != nil {
			return dpserr.BadRequest("connectionString: %v", err)
		}
		if !strings.EqualFold(cs.HostName, name) {
			return dpserr.BadRequest("connectionString is for %q, not %q", cs.HostName, name)
		}
		if cs.SharedAccessKeyName == "" || cs.SharedAccessKey == "" {
			return dpserr.BadRequest("connectionString needs SharedAccessKeyName and SharedAccessKey (a hub policy with registry write rights)")
		}
		h.ConnectionString = cs.String()
	}
	if body.Location != "" {
		h.Location = body.Location
	}
	if body.AllocationWeight != nil {
		if *body.AllocationWeight < 1 || *body.AllocationWeight > 1000 {
			return dpserr.BadRequest("allocationWeight %d is outside 1 to 1000", *body.AllocationWeight)
		}
		h.AllocationWeight = *body.AllocationWeight
	}
	if body.ApplyAllocationPolicy != nil {
		h.ApplyAllocationPolicy = *body.ApplyAllocationPolicy
	}
	if err := applyRegistry(h, &body); err != nil {
		return err
	}
	stored, err := a.Store.PutLinkedHub(r.Context(), h, ifMatch)
	if err != nil {
		return dpserr.FromStore(err, linkedHubs, name)
	}
	httpx.WriteJSON(w, http.StatusOK, LinkedHubView(stored))
	return nil
}

// applyRegistry sets the device registry the body names, and checks the
// result: an azure-iothub registry needs the hub's connection string, a
// webhook an https:// URL (http:// to loopback only) and a secret.
func applyRegistry(h *store.LinkedHub, body *dps.LinkedHubBody) error {
	kind, err := hub.ParseKind(cmp.Or(body.DeviceRegistry, h.DeviceRegistry))
	if err != nil {
		return dpserr.BadRequest("deviceRegistry: %v", err)
	}
	h.DeviceRegistry = string(kind)
	if kind != hub.KindWebhook {
		if body.RegistryWebhookURL != "" || body.RegistryWebhookSecret != "" {
			return dpserr.BadRequest("registryWebhookUrl and registryWebhookSecret apply to deviceRegistry webhook, and this hub's is %s", kind)
		}
		h.RegistryWebhookURL, h.RegistryWebhookSecret = "", ""
	} else {
		// What a client read and sends back stands for the stored values.
		if u := body.RegistryWebhookURL; u != "" && (h.RegistryWebhookURL == "" || u != outbound.Redact(h.RegistryWebhookURL)) {
			h.RegistryWebhookURL = u
		}
		if sec := body.RegistryWebhookSecret; sec != "" && sec != maskedSecret {
			h.RegistryWebhookSecret = sec
		}
	}
	cfg := hub.Config{Kind: kind, Hub: h.Name, ConnectionString: h.ConnectionString, WebhookURL: h.RegistryWebhookURL, WebhookSecret: h.RegistryWebhookSecret}
	if err := cfg.Validate(); err != nil {
		if kind == hub.KindAzureIoTHub && h.ConnectionString == "" {
			return dpserr.BadRequest("deviceRegistry azure-iothub needs the hub's connectionString (a policy with registry write rights)")
		}
		return dpserr.BadRequest("deviceRegistry %s: %v", kind, err)
	}
	return nil
}

// keepMaskedKey lets a client write back the masked connection string it
// read: SharedAccessKey=**** stands for the stored key of the same policy.
func keepMaskedKey(in, stored string) string {
	cs, err := sas.ParseConnectionString(strings.Replace(in, "SharedAccessKey=****", "SharedAccessKey=", 1))
	if err != nil || !strings.Contains(in, "SharedAccessKey=****") || stored == "" {
		return in
	}
	prev, err := sas.ParseConnectionString(stored)
	if err != nil || !strings.EqualFold(prev.HostName, cs.HostName) || prev.SharedAccessKeyName != cs.SharedAccessKeyName {
		return in
	}
	cs.SharedAccessKey = prev.SharedAccessKey
	return cs.String()
}

// PolicyView renders a policy with its keys: only ServiceConfig may read it.
func PolicyView(p *store.Policy) dps.AccessPolicy {
	return dps.AccessPolicy{KeyName: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey, Rights: strings.Join(p.Rights, ", "), Etag: p.Etag}
}

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request, p []string) error {
	name := p[0]
	if err := dps.ValidateCAName(name); err != nil { // same alphabet as ARM rule names
		return dpserr.BadRequest("policy name: %v", strings.TrimPrefix(err.Error(), "certificate name "))
	}
	var body dps.AccessPolicy
	if err := httpx.DecodeJSON(r, &body, false); err != nil {
		return err
	}
	if body.KeyName != "" && !strings.EqualFold(body.KeyName, name) {
		return dpserr.BadRequest("keyName %q in the body does not match %q in the URL", body.KeyName, name)
	}
	ifMatch := httpx.IfMatch(r)
	pol := &store.Policy{Name: name}
	if ifMatch != "" {
		if prev, err := a.Store.Policy(r.Context(), name); err == nil {
			pol = prev
		}
	}
	if body.Rights != "" || len(pol.Rights) == 0 {
		rights, err := dps.ParseRights(body.Rights)
		if err != nil {
			return dpserr.BadRequest("rights: %v", err)
		}
		pol.Rights = rights
	}
	for _, k := range []struct {
		name     string
		in       string
		dst      *string
		required bool
	}{{"primaryKey", body.PrimaryKey, &pol.PrimaryKey, true}, {"secondaryKey", body.SecondaryKey, &pol.SecondaryKey, true}} {
		switch {
		case k.in != "":
			b, err := sas.DecodeKey(k.in)
			if err != nil || len(b) < 16 || len(b) > 64 {
				return dpserr.BadRequest("%s must be base64 of 16 to 64 bytes", k.name)
			}
			*k.dst = k.in
		case *k.dst == "":
			*k.dst = sas.NewKey(dps.PolicyKeyBytes)
		}
	}
	if err := a.keepServiceConfig(r, pol.Name, pol.Rights); err != nil {
		return err
	}
	stored, err := a.Store.PutPolicy(r.Context(), pol, ifMatch)
	if err != nil {
		return dpserr.FromStore(err, policies, name)
	}
	httpx.WriteJSON(w, http.StatusOK, PolicyView(stored))
	return nil
}

func (a *API) deletePolicy(w http.ResponseWriter, r *http.Request, p []string) error {
	if err := a.keepServiceConfig(r, p[0], nil); err != nil {
		return err
	}
	return deleteOne(policies, a.Store.DeletePolicy)(w, r, p)
}

// keepServiceConfig refuses a change that would leave no policy with the
// ServiceConfig right: nobody could manage the instance over the API again.
func (a *API) keepServiceConfig(r *http.Request, name string, newRights []string) error {
	for _, g := range newRights {
		if g == dps.RightServiceConfig {
			return nil
		}
	}
	ps, err := a.Store.Policies(r.Context())
	if err != nil {
		return dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	for _, p := range ps {
		if strings.EqualFold(p.Name, name) {
			continue
		}
		for _, g := range p.Rights {
			if g == dps.RightServiceConfig {
				return nil
			}
		}
	}
	return dpserr.BadRequest("policy %q is the last one with ServiceConfig; removing that right would lock every client out of the instance's configuration", name)
}

func (a *API) settings(r *http.Request) (*dps.Settings, *store.Instance, error) {
	inst, err := a.Store.Instance(r.Context())
	if err != nil {
		return nil, nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	s := &dps.Settings{IDScope: inst.IDScope, AllocationPolicy: inst.AllocationPolicy}
	if s.AllocationPolicy == "" {
		s.AllocationPolicy = dps.AllocationHashed
	}
	if a.Endpoints != nil {
		s.DeviceProvisioningHostName, s.ServiceOperationsHostName = a.Endpoints()
	}
	return s, inst, nil
}

func (a *API) getSettings(w http.ResponseWriter, r *http.Request, _ []string) error {
	s, _, err := a.settings(r)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, s)
	return nil
}

// putSettings changes the instance default allocation policy; the ID scope
// and endpoints are read-only, accepted unchanged so that a client can send
// back what it read. A member that is not a setting is refused rather than
// ignored: the change it asks for would silently not happen.
func (a *API) putSettings(w http.ResponseWriter, r *http.Request, _ []string) error {
	b, err := httpx.ReadBody(r)
	if err != nil {
		return err
	}
	var body dps.Settings
	if err := httpx.DecodeBytes(b, &body, false); err != nil {
		return err
	}
	if err := settingsMembers(b); err != nil {
		return err
	}
	s, inst, err := a.settings(r)
	if err != nil {
		return err
	}
	if body.IDScope != "" && body.IDScope != s.IDScope {
		return dpserr.BadRequest("the ID scope cannot be changed")
	}
	for _, ro := range []struct{ name, in, cur string }{
		{"deviceProvisioningHostName", body.DeviceProvisioningHostName, s.DeviceProvisioningHostName},
		{"serviceOperationsHostName", body.ServiceOperationsHostName, s.ServiceOperationsHostName},
	} {
		if ro.in != "" && !strings.EqualFold(ro.in, ro.cur) {
			return dpserr.BadRequest("%s %q cannot be set here: it is %s, from the first --hostname and the listener's port", ro.name, dps.Truncate(ro.in), ro.cur)
		}
	}
	if body.AllocationPolicy != "" {
		p, ok := enrollment.CanonicalAllocationPolicy(body.AllocationPolicy)
		if !ok || p == dps.AllocationCustom {
			return dpserr.BadRequest("allocationPolicy %q: the instance default must be hashed, geoLatency or static (custom is set per enrollment)", body.AllocationPolicy)
		}
		inst.AllocationPolicy = p
		if err := a.Store.UpdateInstance(r.Context(), inst); err != nil {
			return dpserr.FromStore(err, dpserr.NoRecord, "")
		}
	}
	s, _, err = a.settings(r)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, s)
	return nil
}

// settingsMembers refuses a settings body with a member that is not a
// setting (JSON member names match case-insensitively, as decoding does).
func settingsMembers(b []byte) error {
	var members map[string]json.RawMessage
	if json.Unmarshal(b, &members) != nil {
		return nil // not an object: decoding said so already
	}
	for k := range members {
		switch strings.ToLower(k) {
		case "idscope", "allocationpolicy", "deviceprovisioninghostname", "serviceoperationshostname":
		case "properties":
			return dpserr.BadRequest(`the body is in Azure Resource Manager's shape ({"properties": {...}}), which dpsd's settings are not; send the settings themselves, e.g. {"allocationPolicy": "static"}`)
		default:
			return dpserr.BadRequest("%q is not a setting: the settings are allocationPolicy, and idScope, deviceProvisioningHostName and serviceOperationsHostName, which are read-only", dps.Truncate(k))
		}
	}
	return nil
}
