package attest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/tpm"
)

// TPM attestation (docs/protocol.md, "TPM attestation"). A device whose
// endorsement key (EK) is enrolled registers first without Authorization and
// is answered with a Challenge: a key wrapped so that only its TPM can
// import it. It repeats the register, and polls, with SAS tokens signed by
// the TPM with that key.
//
// The challenge key is not stored: it is derived from the instance's TPM
// challenge secret, the registration ID, the enrolled EK and the hour the
// challenge was issued in (TPMChallengeKey). So every node verifies what
// any node issued, a device that asks again within the hour gets the same
// key (a second challenge never breaks a device in the middle of its flow),
// a key authenticates only the registration ID and EK it was made for, and
// unauthenticated requests write nothing. A key is accepted in the hour it
// was issued in and the next one; a node whose clock runs a little behind
// accepts the hour after too.

// ChallengeKeyName is the keyName of every challenge; devices sign with
// skn=registration whatever the service says (the Node client does).
const ChallengeKeyName = "registration"

const (
	// challengePeriod is the period of TPMChallengeKey; a key is accepted
	// for one to two periods.
	challengePeriod = time.Hour
	// challengeSkew is how far the clocks of two nodes may differ.
	challengeSkew = 5 * time.Minute
	// expiredPeriods bounds the search for the period of an expired key,
	// which makes the refusal say "expired" rather than "not signed".
	expiredPeriods = 24
)

// Challenge is the answer to a TPM device's first register: status 401 with
// this body at the top level and nothing else (the C SDK refuses a body
// with a status field). It is returned as an error so that it leaves the
// attestation path as a refusal would, but it is not a refusal.
type Challenge struct {
	// AuthenticationKey is the base64 activation blob of the key.
	AuthenticationKey string `json:"authenticationKey"`
	KeyName           string `json:"keyName"`
}

func (c *Challenge) Error() string { return "TPM challenge" }

// TPMChallengeKey is the key of the TPM challenges issued at time at to the
// device with this registration ID (any case) and endorsement key, under
// the instance's TPM challenge secret: HMAC-SHA256 over a label, the
// challenge's period, the lower-case registration ID and the canonical EK.
// Tests use it to sign as a TPM that activated a challenge.
func TPMChallengeKey(secret []byte, registrationID string, ek *tpm.Public, at time.Time) []byte {
	return challengeKey(secret, registrationID, ek, period(at))
}

func challengeKey(secret []byte, registrationID string, ek *tpm.Public, p int64) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("dpsd TPM challenge key\x00"))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(p)))
	m.Write([]byte(strings.ToLower(registrationID) + "\x00"))
	m.Write(ek.Bytes())
	return m.Sum(nil)
}

func period(t time.Time) int64 { return t.Unix() / int64(challengePeriod/time.Second) }

func periodStart(p int64) time.Time {
	return time.Unix(p*int64(challengePeriod/time.Second), 0).UTC()
}

// TPMChallenge answers a TPM device's register without Authorization,
// carrying its endorsement and storage root keys: an unknown registration
// ID is 404 (404201), an enrollment of another mechanism or EK is refused,
// and an enrolled EK gets its *Challenge (as the error).
func (a *Attestor) TPMChallenge(ctx context.Context, registrationID string, keys *dps.TPMAttestation) error {
	e, ek, err := a.tpmEnrollment(ctx, registrationID, keys)
	if err != nil {
		return err
	}
	srk, err := storageRootKey(e, keys)
	if err != nil {
		return err
	}
	secret, err := a.tpmSecret(ctx)
	if err != nil {
		return err
	}
	blob, err := tpm.ActivationBlob(ek, srk, TPMChallengeKey(secret, registrationID, ek, a.now()))
	if err != nil {
		return keyRefusal(err)
	}
	return &Challenge{AuthenticationKey: base64.StdEncoding.EncodeToString(blob), KeyName: ChallengeKeyName}
}

// tpmEnrollment finds the TPM enrollment of a registration ID and checks
// that the EK the device sent is the enrolled one (compared canonically).
func (a *Attestor) tpmEnrollment(ctx context.Context, registrationID string, keys *dps.TPMAttestation) (*dps.IndividualEnrollment, *tpm.Public, error) {
	if keys == nil || keys.EndorsementKey == "" {
		return nil, nil, dpserr.BadRequest("tpm.endorsementKey is missing: a TPM device sends its endorsement key and storage root key (base64 TPM2B_PUBLIC)")
	}
	sent, err := tpm.ParsePublicBase64(keys.EndorsementKey)
	if err != nil {
		return nil, nil, dpserr.BadRequest("tpm.endorsementKey: %v", err)
	}
	e, err := a.Store.Enrollment(ctx, registrationID)
	if errors.Is(err, store.ErrNotFound) {
		hint := ""
		if def := sent.RegistrationID(); !strings.EqualFold(def, registrationID) {
			hint = fmt.Sprintf(" (this TPM's default registration ID, derived from its endorsement key, is %q)", def)
		}
		return nil, nil, dpserr.NotFound(dpserr.CodeEnrollmentNotFound, "no individual enrollment for registration ID %q%s; a TPM device is enrolled individually with its endorsement key (dpsd enrollment create --attestation-type tpm --endorsement-key ...)", registrationID, hint)
	}
	if err != nil {
		return nil, nil, err
	}
	ek, err := TPMKeyOf(e, sent)
	if err != nil {
		return nil, nil, err
	}
	return e, ek, nil
}

// TPMKeyOf returns the endorsement key of a TPM enrollment, refusing an
// enrollment of another mechanism, and sent (when not nil) unless it is
// that key.
func TPMKeyOf(e *dps.IndividualEnrollment, sent *tpm.Public) (*tpm.Public, error) {
	att := e.Attestation
	if att == nil || att.Type != dps.AttestationTPM || att.TPM == nil {
		return nil, dpserr.Unauthorized("individual enrollment %q uses %s attestation, but the device sent a TPM endorsement key", e.RegistrationID, attType(att))
	}
	ek, err := tpm.ParsePublicBase64(att.TPM.EndorsementKey)
	if err != nil {
		return nil, dpserr.Unauthorized("the endorsement key of individual enrollment %q is not a TPM public key (%v); update the enrollment with the TPM's endorsement key, base64 of its TPM2B_PUBLIC", e.RegistrationID, err)
	}
	if sent != nil && !sent.Equal(ek) {
		return nil, dpserr.Unauthorized("the endorsement key the device sent is not the one of individual enrollment %q: the device's TPM has default registration ID %q, the enrolled one %q", e.RegistrationID, sent.RegistrationID(), ek.RegistrationID())
	}
	return ek, nil
}

// storageRootKey is the SRK the device sent, or else the enrollment's.
func storageRootKey(e *dps.IndividualEnrollment, keys *dps.TPMAttestation) (*tpm.Public, error) {
	s := ""
	if keys != nil {
		s = keys.StorageRootKey
	}
	if s == "" && e.Attestation.TPM.StorageRootKey != "" {
		s = e.Attestation.TPM.StorageRootKey
	}
	if s == "" {
		return nil, dpserr.BadRequest("tpm.storageRootKey is missing: the key dpsd sends is wrapped to the TPM's storage root key (base64 TPM2B_PUBLIC)")
	}
	srk, err := tpm.ParsePublicBase64(s)
	if err != nil {
		return nil, dpserr.BadRequest("tpm.storageRootKey: %v", err)
	}
	return srk, nil
}

// keyRefusal explains keys the activation cannot use.
func keyRefusal(err error) error {
	if errors.Is(err, tpm.ErrUnsupported) || errors.Is(err, tpm.ErrMalformed) {
		return dpserr.BadRequest("%v", err)
	}
	return err
}

// tpmSAS authenticates a TPM device by a SAS token (already checked for
// expiry and resource) signed with the key of a challenge it was issued.
func (a *Attestor) tpmSAS(ctx context.Context, registrationID string, e *dps.IndividualEnrollment, tok *sas.Token) (*Identity, error) {
	ek, err := TPMKeyOf(e, nil)
	if err != nil {
		return nil, err
	}
	secret, err := a.tpmSecret(ctx)
	if err != nil {
		return nil, err
	}
	now := a.now()
	cur := period(now)
	from := cur + 1 // a node whose clock runs ahead may have issued it
	if now.Add(challengeSkew).Before(periodStart(from)) {
		from = cur
	}
	for p := from; p >= cur-1; p-- {
		if tok.Verify(challengeKey(secret, registrationID, ek, p)) {
			return &Identity{Mechanism: dps.AttestationTPM, Individual: e}, nil
		}
	}
	for p := cur - 2; p > cur-expiredPeriods; p-- {
		if tok.Verify(challengeKey(secret, registrationID, ek, p)) {
			return nil, dpserr.Unauthorized("the SAS token is signed with the key of a TPM challenge issued to registration %q between %s and %s, which expired at %s; register again without Authorization for a new challenge",
				registrationID, periodStart(p).Format(time.RFC3339), periodStart(p+1).Format(time.RFC3339), periodStart(p+2).Format(time.RFC3339))
		}
	}
	return nil, dpserr.Unauthorized("the SAS token is not signed with the key of a TPM challenge issued to registration %q in the last %s: a TPM device registers first without Authorization, activates the key of the 401 answer in its TPM and signs with it; a token signed with any other key (another device's, or altered on the way) is refused",
		registrationID, 2*challengePeriod)
}

// IssueTPMHubKey gives a TPM device's identity the keys of its IoT hub
// identity: a fresh primary key (HubKey), wrapped to the device's TPM
// (HubKeyBlob, registrationState.tpm.authenticationKey), and a fresh
// secondary key that no one receives (IoT Hub wants both keys of a sas
// identity; only the TPM can sign with the primary). keys are the EK and
// SRK the device sent with the register; the EK must be the enrolled one.
func (a *Attestor) IssueTPMHubKey(id *Identity, keys *dps.TPMAttestation) error {
	var sent *tpm.Public
	if keys != nil && keys.EndorsementKey != "" {
		var err error
		if sent, err = tpm.ParsePublicBase64(keys.EndorsementKey); err != nil {
			return dpserr.BadRequest("tpm.endorsementKey: %v", err)
		}
	}
	ek, err := TPMKeyOf(id.Individual, sent)
	if err != nil {
		return err
	}
	srk, err := storageRootKey(id.Individual, keys)
	if err != nil {
		return err
	}
	key := tpm.NewKey()
	blob, err := tpm.ActivationBlob(ek, srk, key)
	if err != nil {
		return keyRefusal(err)
	}
	id.HubKey = base64.StdEncoding.EncodeToString(key)
	id.HubSecondaryKey = base64.StdEncoding.EncodeToString(tpm.NewKey())
	id.HubKeyBlob = base64.StdEncoding.EncodeToString(blob)
	return nil
}

// tpmSecret returns the instance's TPM challenge secret. It is read for
// each TPM request (from memory when the store is dpsd's cache), so that an
// Attestor holds no state.
func (a *Attestor) tpmSecret(ctx context.Context) ([]byte, error) {
	inst, err := a.Store.Instance(ctx)
	if err != nil {
		return nil, err
	}
	if len(inst.TPMChallengeSecret) == 0 {
		return nil, dpserr.Internal(errors.New("the instance has no TPM challenge secret (dpsd serve creates it at start)"))
	}
	return inst.TPMChallengeSecret, nil
}
