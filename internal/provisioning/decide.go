package provisioning

import (
	"cmp"
	"context"
	"encoding/json"
	"strings"

	"github.com/dpsd/dpsd/internal/allocation"
	"github.com/dpsd/dpsd/internal/attest"
	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/hub"
	"github.com/dpsd/dpsd/internal/issuance"
	"github.com/dpsd/dpsd/internal/store"
)

// What a registration decides, from the device's identity, its record and
// the linked hubs, before any call out. Re-provisioning follows the
// enrollment's reprovisionPolicy (docs/protocol.md, section 9):
//
//	where the device is         hub actions                                  substatus
//	nowhere (first, or deleted) put it on the chosen hub with the initial twin initialAssignment
//	on the chosen hub           put it there again (its keys may have changed) reprovisionedToInitialAssignment
//	elsewhere, migrate          copy its twin to the chosen hub, remove it      deviceDataMigrated
//	elsewhere, reset            initial twin on the chosen hub, remove it       deviceDataReset
//
// "Never re-provision" (updateHubAssignment false) keeps the device on its
// hub, and so do legacy api-versions when the enrollment sets no policy.

// inputs are what a decision reads besides the device's record: the linked
// hubs, and the instance's policy when the enrollment names none.
type inputs struct {
	linked []*store.LinkedHub
	policy string
}

func (p *Pipeline) readInputs(ctx context.Context, s *dps.EnrollmentSettings) (*inputs, error) {
	linked, err := p.Store.LinkedHubs(ctx)
	if err != nil {
		return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	in := &inputs{linked: linked}
	if s.AllocationPolicy == "" {
		inst, err := p.Store.Instance(ctx)
		if err != nil {
			return nil, dpserr.FromStore(err, dpserr.NoRecord, "")
		}
		in.policy = inst.AllocationPolicy
	}
	return in, nil
}

// decision is what a registration decided before any call out.
type decision struct {
	id *attest.Identity
	// regID is the record's spelling of the registration ID (that of the
	// first registration), and deviceID the device's ID in its hub.
	regID, deviceID string
	prev            *store.Registration // nil before the first registration
	placement       store.Placement     // where the device is now
	policy          string
	// migrate copies the device's twin to its new hub on a move.
	migrate bool
	// offered are the candidate hubs (custom allocation: what the webhook
	// may choose from).
	offered []allocation.Hub
	// hub is the chosen hub; "" on failure and under custom allocation,
	// where the webhook chooses.
	hub    string
	fail   *allocation.Failure
	linked []*store.LinkedHub
	// issued is the certificate the device asked for, signed before the
	// calls out: its hub identity (nil when it asked for none).
	issued *issuance.Issued
}

// legacyAPIVersion reports whether a device's api-version predates
// re-provisioning policies (2018-04-01 and older): Azure keeps such devices
// on their hub unless the enrollment sets a policy.
func legacyAPIVersion(v string) bool {
	if len(v) < 10 || v[4] != '-' || v[7] != '-' {
		return false
	}
	return v[:10] <= "2018-04-01"
}

func (p *Pipeline) decide(req *Request, id *attest.Identity, prev *store.Registration, in *inputs) *decision {
	d := &decision{id: id, prev: prev, regID: req.RegistrationID, linked: in.linked}
	// Registration IDs are case-insensitive: the record keeps the spelling
	// of its first registration, and so does the device ID derived from it.
	if prev != nil {
		d.regID = cmp.Or(prev.Result.RegistrationID, d.regID)
		d.placement = prev.Placement
	}
	d.deviceID = d.regID
	if id.Individual != nil && id.Individual.DeviceID != "" {
		d.deviceID = id.Individual.DeviceID
	}
	s := id.Settings()
	d.policy = cmp.Or(s.AllocationPolicy, in.policy)
	reprov := dps.DefaultReprovisionPolicy
	if s.ReprovisionPolicy != nil {
		reprov = *s.ReprovisionPolicy
	}
	d.migrate = reprov.MigrateDeviceData
	if !d.placement.IsZero() && (!reprov.UpdateHubAssignment || s.ReprovisionPolicy == nil && legacyAPIVersion(req.APIVersion)) {
		h := allocation.Hub{Name: d.placement.Hub}
		if l := findHub(in.linked, h.Name); l != nil {
			h = allocation.Hub{Name: l.Name, Weight: l.AllocationWeight, Location: l.Location}
		}
		d.offered = []allocation.Hub{h}
		if d.policy != dps.AllocationCustom {
			d.hub = h.Name
		}
		return d
	}
	cands, fail := allocation.Candidates(s.Hubs(), "", in.linked)
	if fail != nil {
		d.fail = fail
		return d
	}
	d.offered = cands
	if d.policy == dps.AllocationCustom {
		if s.CustomAllocationDefinition == nil {
			d.fail = &allocation.Failure{Code: dpserr.CodeCustomAllocation, Message: "Custom allocation failed: the enrollment has no customAllocationDefinition (webhookUrl, apiVersion)"}
		}
		return d
	}
	d.hub, d.fail = p.Geo.Select(d.policy, cands, req.RegistrationID)
	return d
}

// findHub returns the linked hub of a name (ignoring case), or nil.
func findHub(linked []*store.LinkedHub, name string) *store.LinkedHub {
	if name == "" {
		return nil
	}
	for _, h := range linked {
		if strings.EqualFold(h.Name, name) {
			return h
		}
	}
	return nil
}

// registryKind is the device registry of a hub; a hub that is not linked
// (any more) has none dpsd can reach.
func registryKind(linked []*store.LinkedHub, name string) hub.Kind {
	h := findHub(linked, name)
	if h == nil {
		return hub.KindNone
	}
	k, err := hub.ParseKind(h.DeviceRegistry)
	if err != nil {
		// One dpsd does not know: calling out reports it.
		return hub.Kind(h.DeviceRegistry)
	}
	return k
}

// callsOut reports whether the decision needs calls out of dpsd: custom
// allocation, or a device registry on the chosen hub or on the hub the
// device leaves. Without them a registration is one store transaction.
func (d *decision) callsOut() bool {
	if d.fail != nil {
		return false
	}
	return d.policy == dps.AllocationCustom || registryKind(d.linked, d.hub) != hub.KindNone ||
		registryKind(d.linked, d.placement.Hub) != hub.KindNone
}

// hubChange reports whether assigning the device to h moves it off
// another hub.
func (d *decision) hubChange(h string) bool {
	return !d.placement.IsZero() && !strings.EqualFold(d.placement.Hub, h)
}

// moves reports whether assigning the device to h leaves a device
// identity behind: another hub, or another device ID on the same hub.
func (d *decision) moves(h string) bool {
	return d.hubChange(h) || !d.placement.IsZero() && d.placement.DeviceID != d.deviceID
}

func (d *decision) substatus(h string) string {
	switch {
	case d.placement.IsZero():
		return dps.SubstatusInitialAssignment
	case !d.hubChange(h):
		return dps.SubstatusReprovisionedToInitialAssignment
	case d.migrate:
		return dps.SubstatusDeviceDataMigrated
	}
	return dps.SubstatusDeviceDataReset
}

// outcome is what the calls out of a job did.
type outcome struct {
	hub  string              // the hub custom allocation chose
	fail *allocation.Failure // the registration fails
	// payload is the custom allocation webhook's payload for the device.
	payload json.RawMessage
	// applied is the twin written to the hub; keep says nothing was
	// written and the hub keeps the one written before.
	applied *dps.InitialTwin
	keep    bool
}

// record is the registration record the decision comes to, with what the
// calls out did (nil when there were none).
func (d *decision) record(req *Request, out *outcome) *store.Registration {
	res := &dps.DeviceRegistrationResult{RegistrationID: d.regID}
	setAttestation(res, d.id)
	rec := &store.Registration{Result: res, EnrollmentGroupID: d.id.GroupID()}
	if req.Body != nil {
		rec.DevicePayload = req.Body.Payload
	}
	h, fail := d.hub, d.fail
	if out != nil && out.fail != nil {
		fail = out.fail
	} else if out != nil && out.hub != "" {
		h = out.hub
	}
	if fail != nil {
		res.Status, res.ErrorCode, res.ErrorMessage = dps.StatusFailed, fail.Code, fail.Message
		// The device is where it was: a failed registration leaves the
		// hubs as they were.
		if d.prev != nil {
			rec.Placement, rec.AppliedTwin = d.prev.Placement, d.prev.AppliedTwin
		}
		return rec
	}
	res.Status, res.AssignedHub, res.DeviceID, res.Substatus = dps.StatusAssigned, h, d.deviceID, d.substatus(h)
	rec.Placement = store.Placement{Hub: h, DeviceID: d.deviceID}
	keep := out == nil || out.keep
	if out != nil {
		res.Payload, rec.AppliedTwin = out.payload, out.applied
	}
	if keep && !d.moves(h) && d.prev != nil {
		rec.AppliedTwin = d.prev.AppliedTwin
	}
	return rec
}
