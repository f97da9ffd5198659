package provisioning

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// The calls out of an assignment: the custom allocation webhook, then the
// device registries of the hubs (internal/hub), in the order that leaves
// nothing half-assigned: the device is put on its new hub (identity, then
// twin), and only then removed from the hub it leaves. A failure before
// the removal fails the registration and leaves the device where it was
// (a device the registry had just created is deleted again); a failed
// removal is logged, and the device is assigned to its new hub.

// callOut runs the calls out of a decision.
func (p *Pipeline) callOut(ctx context.Context, req *Request, d *decision) *outcome {
	out := &outcome{hub: d.hub}
	var webhookTwin *dps.InitialTwin
	if d.policy == dps.AllocationCustom {
		resp, fail := p.allocate(ctx, req, d)
		if fail != nil {
			out.fail = fail
			return out
		}
		out.hub, out.payload, webhookTwin = resp.IotHubHostName, resp.Payload, resp.InitialTwin
	}
	if err := p.place(ctx, req, d, out, webhookTwin); err != nil {
		out.fail = hubFailure(err)
	}
	return out
}

// allocate asks the enrollment's custom allocation webhook for the hub.
func (p *Pipeline) allocate(ctx context.Context, req *Request, d *decision) (*allocation.CustomResponse, *allocation.Failure) {
	id := d.id
	rc := allocation.DeviceRuntimeContext{RegistrationID: req.RegistrationID}
	if req.Body != nil {
		rc.Payload = req.Body.Payload
	}
	if !d.placement.IsZero() {
		rc.CurrentIotHubHostName, rc.CurrentDeviceID = d.placement.Hub, d.placement.DeviceID
	}
	switch id.Mechanism {
	case dps.AttestationX509:
		rc.X509 = &dps.X509RegistrationResult{CertificateInfo: id.Leaf, EnrollmentGroupID: id.GroupID(), SigningCertificateInfo: id.Signer}
	case dps.AttestationSymmetricKey:
		rc.SymmetricKey = &allocation.SymmetricKeyContext{}
	case dps.AttestationTPM:
		if a := id.Settings().Attestation; a != nil && a.TPM != nil {
			rc.TPM = &dps.TPMAttestation{EndorsementKey: a.TPM.EndorsementKey, StorageRootKey: a.TPM.StorageRootKey}
		}
	}
	names := make([]string, len(d.offered))
	for i, h := range d.offered {
		names[i] = h.Name
	}
	if p.Outbound == nil {
		return nil, &allocation.Failure{Code: dpserr.CodeCustomAllocation, Message: "Custom allocation failed: this dpsd makes no outbound calls"}
	}
	c := allocation.CustomClient{Client: p.Outbound}
	return c.Allocate(ctx, id.Settings().CustomAllocationDefinition.WebhookURL, allocation.NewCustomRequest(id.Individual, id.Group, rc, names))
}

// place puts the device on its hub and takes it off the hub it leaves,
// and records in out the twin it wrote.
func (p *Pipeline) place(ctx context.Context, req *Request, d *decision, out *outcome, webhookTwin *dps.InitialTwin) error {
	target := out.hub
	newReg, newKind, err := p.registry(d.linked, target)
	if err != nil {
		return err
	}
	moved, hubChange := d.moves(target), d.hubChange(target)
	auth, err := deviceAuth(d.id, req.RegistrationID)
	if d.issued != nil {
		// A device that asked for a certificate connects to its hub with it.
		auth, err = hub.SelfSignedAuth(d.issued.Record.SHA256Thumbprint, ""), nil
	}
	if err != nil {
		return fmt.Errorf("hub %s: device %q: %v", target, d.deviceID, err)
	}
	a := &hub.Assignment{RegistrationID: d.regID, DeviceID: d.deviceID, Attestation: d.id.Mechanism, Auth: auth,
		Substatus: d.substatus(target), TwinMode: hub.TwinMerge}
	if c := d.id.Settings().Capabilities; c != nil {
		a.IotEdge = c.IotEdge
	}
	if req.Body != nil {
		a.Payload = req.Body.Payload
	}
	if hubChange {
		a.PreviousHub = d.placement.Hub
	}
	// The webhook's initial twin is for a device that starts afresh: a
	// first assignment, or a move to another hub that resets its data.
	initial := d.id.Settings().InitialTwin
	if webhookTwin != nil && (d.placement.IsZero() || hubChange && !d.migrate) {
		initial = webhookTwin
	}
	var oldReg hub.Registry = hub.None{}
	var oldKind hub.Kind = hub.KindNone
	if moved {
		if oldReg, oldKind, err = p.registry(d.linked, d.placement.Hub); err != nil {
			p.Log.Warn("the device registry of the hub a device leaves cannot be used; the device stays there", "registrationId", d.regID,
				"hub", d.placement.Hub, "deviceId", d.placement.DeviceID, "err", err)
			oldReg, oldKind = hub.None{}, hub.KindNone
		}
	}
	switch {
	case d.placement.IsZero():
		a.Twin = initial
	case !moved:
		// The same device on the same hub: its identity is refreshed, its
		// twin left as it is.
		out.keep = true
	case d.migrate && newKind != hub.KindNone && oldKind == hub.KindAzureIoTHub:
		t, err := oldReg.Twin(ctx, d.placement.DeviceID)
		if err != nil {
			return err
		}
		a.Twin, a.TwinMode = t, hub.TwinReplace
	case d.migrate && newKind != hub.KindNone:
		// Only an IoT hub can be asked for a twin: the new hub starts from
		// the initial twin (a registry webhook migrates twins itself, from
		// the event's previousHub).
		a.Twin, a.TwinMode = initial, hub.TwinReplace
		p.Log.Info("the device's twin cannot be read from the hub it leaves; its new hub gets the initial twin", "registrationId", d.regID,
			"hub", target, "previousHub", d.placement.Hub, "previousRegistry", string(oldKind))
	default:
		a.Twin, a.TwinMode = initial, hub.TwinReplace
	}
	if err := newReg.Apply(ctx, a); err != nil {
		return err
	}
	if newKind == hub.KindNone {
		out.keep = true
	} else if !out.keep {
		out.applied = a.Twin
	}
	if moved {
		if err := oldReg.Remove(ctx, &hub.Removal{RegistrationID: d.regID, DeviceID: d.placement.DeviceID, NewHub: target}); err != nil {
			p.Log.Warn("the device was assigned to its new hub, but could not be removed from the hub it left", "registrationId", d.regID,
				"hub", target, "previousHub", d.placement.Hub, "previousDeviceId", d.placement.DeviceID, "err", err)
		}
	}
	return nil
}

// registry returns the device registry of a linked hub; a hub that is not
// linked has none.
func (p *Pipeline) registry(linked []*store.LinkedHub, name string) (hub.Registry, hub.Kind, error) {
	h := findHub(linked, name)
	if h == nil {
		return hub.None{}, hub.KindNone, nil
	}
	kind, err := hub.ParseKind(h.DeviceRegistry)
	if err != nil {
		return nil, "", fmt.Errorf("linked hub %s: %v", h.Name, err)
	}
	r, err := hub.New(hub.Config{Kind: kind, Hub: h.Name, ConnectionString: h.ConnectionString,
		WebhookURL: h.RegistryWebhookURL, WebhookSecret: h.RegistryWebhookSecret},
		hub.Options{Client: p.Outbound, Retry: p.HubRetry, Now: p.Now})
	if err != nil {
		return nil, "", fmt.Errorf("the %s device registry of linked hub %s cannot be used: %v", kind, h.Name, err)
	}
	return r, kind, nil
}

// deviceAuth is how a device authenticates to its hub: with what it proved
// itself with to dpsd (docs/protocol.md, section 12).
func deviceAuth(id *attest.Identity, registrationID string) (hub.Authentication, error) {
	switch id.Mechanism {
	case dps.AttestationSymmetricKey:
		k := id.Settings().Attestation.SymmetricKey
		if k == nil || k.PrimaryKey == "" {
			return hub.Authentication{}, errors.New("the enrollment has no symmetric key")
		}
		if id.Group == nil {
			return hub.SASAuth(k.PrimaryKey, k.SecondaryKey), nil
		}
		// A group device holds keys derived from the group's, for the
		// registration ID it signs with.
		derive := func(groupKey string) (string, error) {
			if groupKey == "" {
				return "", nil
			}
			b, err := sas.DecodeKey(groupKey)
			if err != nil {
				return "", err
			}
			return base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(b, registrationID)), nil
		}
		pk, err := derive(k.PrimaryKey)
		if err != nil {
			return hub.Authentication{}, err
		}
		sk, err := derive(k.SecondaryKey)
		if err != nil {
			return hub.Authentication{}, err
		}
		return hub.SASAuth(pk, sk), nil
	case dps.AttestationX509:
		if id.Issued && id.Leaf != nil {
			// A certificate dpsd issued: the hub knows the device by it,
			// whatever the enrollment's own credentials.
			return hub.SelfSignedAuth(id.Leaf.SHA256Thumbprint, ""), nil
		}
		if id.Group != nil {
			return hub.CAAuth(), nil
		}
		var prints []string
		if x := id.Individual.Attestation.X509; x != nil && x.ClientCertificates != nil {
			for _, c := range []*dps.X509CertificateWithInfo{x.ClientCertificates.Primary, x.ClientCertificates.Secondary} {
				if c != nil && c.Info != nil && c.Info.SHA256Thumbprint != "" {
					prints = append(prints, c.Info.SHA256Thumbprint)
				}
			}
		}
		switch len(prints) {
		case 0:
			return hub.Authentication{}, errors.New("the enrollment has no certificate thumbprint")
		case 1:
			return hub.SelfSignedAuth(prints[0], ""), nil
		}
		return hub.SelfSignedAuth(prints[0], prints[1]), nil
	case dps.AttestationTPM:
		// A TPM device authenticates to its hub with the key the TPM flow
		// delivers to it (registrationState.tpm.authenticationKey); the
		// secondary key, which IoT Hub requires, is delivered to no one.
		if id.HubKey == "" || id.HubSecondaryKey == "" {
			return hub.Authentication{}, errors.New("a TPM device has no hub key")
		}
		return hub.SASAuth(id.HubKey, id.HubSecondaryKey), nil
	}
	return hub.Authentication{}, fmt.Errorf("attestation %q has no hub identity", id.Mechanism)
}

// hubFailure is the failure that ends a registration whose hub calls
// failed: 400209 when the hub refused dpsd's credentials, else 400210,
// with a message that names the hub and quotes its answer.
func hubFailure(err error) *allocation.Failure {
	var he *hub.Error
	if errors.As(err, &he) && he.Unauthorized() {
		return &allocation.Failure{Code: dpserr.CodeHubUnauthorized, Message: err.Error()}
	}
	msg := err.Error()
	if !strings.Contains(msg, "hub") {
		msg = "IoT hub: " + msg
	}
	return &allocation.Failure{Code: dpserr.CodeHubFailed, Message: msg}
}
