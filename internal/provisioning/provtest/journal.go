package provtest

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
	"github.com/dpsd/dpsd/internal/testutil"
)

// JournalOps names the requests of a case that the refusal journal must
// hold an entry of (provisioning.OpRegister, OpPoll, OpLookup).
type JournalOps func(Refusal) []string

// CheckJournal checks the refusal journal of in after the cases of table
// ran over transport: every case has an entry of each of its ops with its
// registration ID, errorCode and reason (a disabled enrollment: the
// register's 202 with errorCode 401002), a UUID tracking ID, the peer's
// loopback address and a summary of what the device presented (the leaf's
// SHA-256 thumbprint, the SAS token's key name, or "no credentials"). No
// entry and no line of logs holds a secret of the instance or of the table
// (Secrets).
func CheckJournal(t *testing.T, in Instance, table map[string]Refusal, transport string, ops JournalOps, logs string) {
	t.Helper()
	entries := testutil.All(t, func(ctx context.Context, after string, limit int) (store.Page[*store.Refusal], error) {
		return in.Store.Refusals(ctx, store.RefusalFilter{}, after, limit)
	})
	for name, tc := range table {
		if _, skipped := tc.NotOver[transport]; skipped {
			continue
		}
		for _, op := range ops(tc) {
			found := false
			for _, e := range entries {
				if e.Transport == transport && e.Operation == op && strings.EqualFold(e.RegistrationID, tc.RegistrationID) &&
					e.ErrorCode == tc.Want.ErrorCode && strings.Contains(e.Reason, tc.Want.Reason) {
					checkEntry(t, name, tc, e)
					found = true
					break
				}
			}
			if !found {
				t.Errorf("%s: no %s %s entry with errorCode %d and reason %q in the journal", name, transport, op, tc.Want.ErrorCode, tc.Want.Reason)
			}
		}
	}
	secrets := Secrets(t, in, table)
	for _, e := range entries {
		for _, s := range secrets {
			if strings.Contains(testutil.JSON(t, e), s) {
				t.Errorf("journal entry %+v holds the secret %q", e, s)
			}
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the secret %q", s)
		}
	}
}

func checkEntry(t *testing.T, name string, tc Refusal, e *store.Refusal) {
	t.Helper()
	if e.Status != tc.Want.Status {
		t.Errorf("%s: %s entry with status %d, want %d", name, e.Operation, e.Status, tc.Want.Status)
	}
	if !IsUUID(e.TrackingID) {
		t.Errorf("%s: tracking ID %q, want a UUID", name, e.TrackingID)
	}
	if host, _, err := net.SplitHostPort(e.Peer); err != nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("%s: peer %q, want a loopback address with its port", name, e.Peer)
	}
	var want string
	switch {
	case tc.Cred.Cert != nil:
		leaf, err := x509.ParseCertificate(tc.Cred.Cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		want = "SHA-256 " + pki.SHA256Thumbprint(leaf)
	case strings.HasPrefix(tc.Cred.SAS, sas.Prefix):
		want = "SAS token"
	case tc.Cred.SAS != "":
		want = "not a SAS token"
	case tc.Cred.TPM != nil:
		want = "a TPM endorsement key in the body"
	default:
		want = "no credentials"
	}
	if !strings.Contains(e.Credential, want) {
		t.Errorf("%s: credential %q does not contain %q", name, e.Credential, want)
	}
}

// Secrets are the secrets of an instance set up by Refusals, as they could
// leak: the symmetric keys of its enrollments and groups (base64), the keys
// derived from each group key for the table's devices, the signatures of the
// table's SAS tokens (as sent and decoded), the devices' private keys
// (the base64 of their PKCS #8 DER), the instance's TPM challenge secret
// and the keys of the challenges of its TPM enrollments.
func Secrets(t *testing.T, in Instance, table map[string]Refusal) []string {
	t.Helper()
	inst, err := in.Store.Instance(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{base64.StdEncoding.EncodeToString(inst.TPMChallengeSecret)}
	addKey := func(a *dps.AttestationMechanism) {
		if a != nil && a.SymmetricKey != nil {
			keys = append(keys, a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey)
		}
	}
	for _, e := range testutil.All(t, in.Store.Enrollments) {
		addKey(e.Attestation)
		if a := e.Attestation; a.TPM != nil {
			if ek, err := base64.StdEncoding.DecodeString(a.TPM.EndorsementKey); err == nil {
				keys = append(keys, base64.StdEncoding.EncodeToString(in.TPMChallengeKey(e.RegistrationID, ek, time.Now())))
			}
		}
	}
	for _, g := range testutil.All(t, in.Store.Groups) {
		addKey(g.Attestation)
		if g.Attestation.SymmetricKey == nil {
			continue
		}
		for _, k := range []string{g.Attestation.SymmetricKey.PrimaryKey, g.Attestation.SymmetricKey.SecondaryKey} {
			gk, err := sas.DecodeKey(k)
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range table {
				keys = append(keys, base64.StdEncoding.EncodeToString(sas.DeriveDeviceKey(gk, tc.RegistrationID)))
			}
		}
	}
	for _, tc := range table {
		if tok, err := sas.Parse(tc.Cred.SAS); err == nil {
			keys = append(keys, base64.StdEncoding.EncodeToString(tok.Signature))
			for _, f := range strings.Split(tc.Cred.SAS, "&") {
				if sig, ok := strings.CutPrefix(f, "sig="); ok {
					u, _ := url.QueryUnescape(sig)
					keys = append(keys, sig, u)
				}
			}
		}
		if c := tc.Cred.Cert; c != nil {
			der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			body := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
			// A line of the PEM body is enough to give a key away.
			keys = append(keys, strings.Split(body, "\n")[2])
		}
	}
	var out []string
	for _, k := range keys {
		if len(k) >= 16 {
			out = append(out, k)
		}
	}
	return out
}
