// Package tpmtest is a stand-in provisioning service for testing TPM device
// clients (the Go client, the Azure Node TPM client): it speaks the HTTPS
// TPM flow — 401 challenge with an activation blob, SAS signed by the TPM,
// assignment carrying the hub key blob — with the blobs of internal/tpm,
// and records what the device sent. It is not dpsd's pipeline.
package tpmtest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/tpm"
)

// Hub is the IoT hub the fake assigns devices to.
const Hub = "tpm-hub.azure-devices.net"

// FakeDPS is an http.Handler for the device API of one ID scope.
type FakeDPS struct {
	IDScope string
	// EndorsementKey, when set, is the only enrolled EK (base64); other
	// EKs are answered 404 (errorCode 404201) as an unknown device.
	EndorsementKey string
	// Assigning makes the signed register answer "assigning", so that the
	// device polls (as --azure-strict does).
	Assigning bool

	mu       sync.Mutex
	devices  map[string]*device
	requests []Request
	problems []string
}

type device struct {
	ek, srk      *tpm.Public
	challengeKey []byte
	hubKey       []byte
	hubBlob      string
}

// Request is what a device sent.
type Request struct {
	Method, Path, Authorization string
	Body                        string
	Status                      int
}

// Requests returns the requests received so far.
func (f *FakeDPS) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.requests...)
}

// Problems returns what the fake refused, in words (bad SAS, bad keys...).
func (f *FakeDPS) Problems() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.problems...)
}

// HubKey returns the IoT hub key the fake sent registrationID at
// assignment (nil before).
func (f *FakeDPS) HubKey(registrationID string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.devices[registrationID]; d != nil {
		return d.hubKey
	}
	return nil
}

func (f *FakeDPS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	status, answer := f.serve(r, body)
	f.mu.Lock()
	f.requests = append(f.requests, Request{Method: r.Method, Path: r.URL.Path, Authorization: r.Header.Get("Authorization"), Body: string(body), Status: status})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if status == http.StatusAccepted {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(answer)
}

func (f *FakeDPS) serve(r *http.Request, body []byte) (int, any) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 4 || parts[0] != f.IDScope || parts[1] != "registrations" {
		return f.refuse(http.StatusNotFound, 404001, "unknown path %s", r.URL.Path)
	}
	regID := parts[2]
	switch {
	case r.Method == http.MethodPut && len(parts) == 4 && parts[3] == "register":
		var req struct {
			RegistrationID string `json:"registrationId"`
			TPM            *struct {
				EndorsementKey string `json:"endorsementKey"`
				StorageRootKey string `json:"storageRootKey"`
			} `json:"tpm"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.TPM == nil {
			return f.refuse(http.StatusBadRequest, 400004, "register body without tpm keys: %s", body)
		}
		if req.RegistrationID != regID {
			return f.refuse(http.StatusBadRequest, 400004, "registrationId %q in the body, %q in the path", req.RegistrationID, regID)
		}
		if r.Header.Get("Authorization") == "" {
			return f.challenge(regID, req.TPM.EndorsementKey, req.TPM.StorageRootKey)
		}
		d, status, answer := f.authorize(r, regID)
		if d == nil {
			return status, answer
		}
		if f.Assigning {
			return http.StatusAccepted, map[string]any{"operationId": "op-" + regID, "status": "assigning"}
		}
		return http.StatusAccepted, f.assigned(regID, d)
	case r.Method == http.MethodGet && len(parts) == 5 && parts[3] == "operations":
		d, status, answer := f.authorize(r, regID)
		if d == nil {
			return status, answer
		}
		return http.StatusOK, f.assigned(regID, d)
	}
	return f.refuse(http.StatusNotFound, 404001, "unknown operation %s %s", r.Method, r.URL.Path)
}

// challenge answers an unsigned register: 401 with a fresh key wrapped to
// the device's EK and SRK.
func (f *FakeDPS) challenge(regID, ekB64, srkB64 string) (int, any) {
	ek, err := tpm.ParsePublicBase64(ekB64)
	if err != nil {
		return f.refuse(http.StatusBadRequest, 400004, "endorsementKey: %v", err)
	}
	srk, err := tpm.ParsePublicBase64(srkB64)
	if err != nil {
		return f.refuse(http.StatusBadRequest, 400004, "storageRootKey: %v", err)
	}
	if f.EndorsementKey != "" && !tpm.SameEndorsementKey(f.EndorsementKey, ekB64) {
		return f.refuse(http.StatusNotFound, 404201, "no enrollment for this endorsement key")
	}
	if ek.RegistrationID() != regID && f.EndorsementKey == "" {
		f.problem("registration ID %q is not the one derived from the EK (%s)", regID, ek.RegistrationID())
	}
	key := tpm.NewKey()
	blob, err := tpm.ActivationBlob(ek, srk, key)
	if err != nil {
		return f.refuse(http.StatusBadRequest, 400004, "%v", err)
	}
	f.mu.Lock()
	if f.devices == nil {
		f.devices = map[string]*device{}
	}
	f.devices[regID] = &device{ek: ek, srk: srk, challengeKey: key}
	f.mu.Unlock()
	return http.StatusUnauthorized, map[string]string{"authenticationKey": base64.StdEncoding.EncodeToString(blob), "keyName": "registration"}
}

// authorize verifies the SAS of a signed request with the challenge key.
func (f *FakeDPS) authorize(r *http.Request, regID string) (*device, int, any) {
	f.mu.Lock()
	d := f.devices[regID]
	f.mu.Unlock()
	if d == nil {
		s, a := f.refuse(http.StatusUnauthorized, 401002, "signed request from %s before any challenge", regID)
		return nil, s, a
	}
	tok, err := sas.Parse(r.Header.Get("Authorization"))
	if err != nil {
		s, a := f.refuse(http.StatusUnauthorized, 401002, "Authorization: %v", err)
		return nil, s, a
	}
	if !tok.MatchesDevice(f.IDScope, regID) || tok.Expired(time.Now()) || !tok.Verify(d.challengeKey) {
		s, a := f.refuse(http.StatusUnauthorized, 401002, "the SAS token does not verify with the challenge key (sr %q, skn %q)", tok.RawResource, tok.KeyName)
		return nil, s, a
	}
	return d, 0, nil
}

// assigned builds the final answer, with the hub key wrapped like the
// challenge (made once per device).
func (f *FakeDPS) assigned(regID string, d *device) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.hubBlob == "" {
		d.hubKey = tpm.NewKey()
		blob, err := tpm.ActivationBlob(d.ek, d.srk, d.hubKey)
		if err != nil {
			panic(err) // the same keys made the challenge
		}
		d.hubBlob = base64.StdEncoding.EncodeToString(blob)
	}
	now := time.Now().UTC().Format("2006-01-02T15:04:05.0000000Z")
	return map[string]any{
		"operationId": "op-" + regID,
		"status":      "assigned",
		"registrationState": map[string]any{
			"registrationId": regID, "assignedHub": Hub, "deviceId": regID,
			"status": "assigned", "substatus": "initialAssignment",
			"createdDateTimeUtc": now, "lastUpdatedDateTimeUtc": now,
			"tpm": map[string]string{"authenticationKey": d.hubBlob},
		},
	}
}

func (f *FakeDPS) refuse(status, code int, format string, args ...any) (int, any) {
	msg := fmt.Sprintf(format, args...)
	f.problem("%s", msg)
	return status, map[string]any{"errorCode": code, "trackingId": "fake", "message": msg}
}

func (f *FakeDPS) problem(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}
