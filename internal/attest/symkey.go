package attest

import (
	"context"
	"errors"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

// SymmetricKey authenticates a device by a SAS token. The signature is
// checked over sr exactly as sent (clients encode it three ways). The
// individual enrollment of the registration ID comes first (a TPM
// enrollment's device signs with the key of its TPM challenge, tpm.go);
// otherwise the token must be signed with a key derived from a
// symmetric-key group's key.
// hintGroup, when not empty, is tried first (the group of the device's last
// registration), sparing a scan of every group.
func (a *Attestor) SymmetricKey(ctx context.Context, idScope, registrationID, token, hintGroup string) (*Identity, error) {
	tok, err := sas.Parse(token)
	if err != nil {
		return nil, dpserr.Unauthorized("malformed SAS token: %v", err)
	}
	now := a.now()
	if err := tok.CheckExpiry(now, a.MaxSASLifetime); err != nil {
		return nil, dpserr.Unauthorized("%v", err)
	}
	if !tok.MatchesDevice(idScope, registrationID) {
		return nil, dpserr.Unauthorized("the SAS token is for resource %q, not %q", dps.Truncate(tok.Resource), sas.DeviceResource(idScope, registrationID))
	}
	e, err := a.Store.Enrollment(ctx, registrationID)
	switch {
	case err == nil && e.Attestation != nil && e.Attestation.Type == dps.AttestationTPM:
		return a.tpmSAS(ctx, registrationID, e, tok)
	case err == nil:
		return individualSAS(e, tok)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	if hintGroup != "" {
		g, err := a.Store.Group(ctx, hintGroup)
		if err == nil {
			if id, err := groupSAS(g, tok, registrationID); id != nil || err != nil {
				return id, err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	gs, err := a.Store.SymmetricKeyGroups(ctx)
	if err != nil {
		return nil, err
	}
	for _, g := range gs {
		if id, err := groupSAS(g, tok, registrationID); id != nil || err != nil {
			return id, err
		}
	}
	return nil, dpserr.Unauthorized("the SAS token signature matches no individual enrollment for registration ID %q and no key derived from a symmetric-key enrollment group; a group device signs with base64(HMAC-SHA256(groupKey, registrationId)) (dpsd enrollment-group compute-device-key)", registrationID)
}

func individualSAS(e *dps.IndividualEnrollment, tok *sas.Token) (*Identity, error) {
	att := e.Attestation
	if att == nil || att.Type != dps.AttestationSymmetricKey || att.SymmetricKey == nil {
		return nil, dpserr.Unauthorized("individual enrollment %q uses %s attestation, but the device sent a SAS token", e.RegistrationID, attType(att))
	}
	for _, k := range []string{att.SymmetricKey.PrimaryKey, att.SymmetricKey.SecondaryKey} {
		if key, err := sas.DecodeKey(k); err == nil && k != "" && tok.Verify(key) {
			return &Identity{Mechanism: dps.AttestationSymmetricKey, Individual: e}, nil
		}
	}
	return nil, dpserr.Unauthorized("the SAS token signature matches neither the primary nor the secondary key of individual enrollment %q", e.RegistrationID)
}

// groupSAS returns the identity when tok is signed with a key derived from
// g's keys, a refusal when it is signed with a group key itself, and
// (nil, nil) when g is not the device's group.
func groupSAS(g *dps.EnrollmentGroup, tok *sas.Token, registrationID string) (*Identity, error) {
	att := g.Attestation
	if att == nil || att.Type != dps.AttestationSymmetricKey || att.SymmetricKey == nil {
		return nil, nil
	}
	for _, k := range []string{att.SymmetricKey.PrimaryKey, att.SymmetricKey.SecondaryKey} {
		key, err := sas.DecodeKey(k)
		if err != nil || k == "" {
			continue
		}
		if tok.Verify(sas.DeriveDeviceKey(key, registrationID)) {
			return &Identity{Mechanism: dps.AttestationSymmetricKey, Group: g}, nil
		}
		if tok.Verify(key) {
			return nil, dpserr.Unauthorized("the SAS token is signed with a key of enrollment group %q itself; a group key cannot authenticate a device: sign with the device key base64(HMAC-SHA256(groupKey, %q)) (dpsd enrollment-group compute-device-key)", g.EnrollmentGroupID, registrationID)
		}
	}
	return nil, nil
}
