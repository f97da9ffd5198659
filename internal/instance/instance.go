// Package instance creates a dpsd instance on first start and keeps its
// identity valid across restarts: the ID scope, the server CA, the server
// certificate (reissued when host names are added or it nears expiry), the
// owner policy and the secret of the TPM challenges.
package instance

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/pki"
	"github.com/dpsd/dpsd/internal/sas"
	"github.com/dpsd/dpsd/internal/store"
)

const (
	caValidityDays     = 3650
	serverValidityDays = 397 // what browsers accept; reissued at start when near the end
	renewBefore        = 30 * 24 * time.Hour
	serverCACommonName = "dpsd server CA"
)

// NewIDScope returns "0ne" followed by 8 upper-case hex digits, the shape of
// Azure's ID scopes.
func NewIDScope() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "0ne" + strings.ToUpper(hex.EncodeToString(b[:]))
}

// Ensure returns the store's instance, creating it on first start. It
// reissues the server certificate when it does not cover hostNames or is
// about to expire, and gives an instance of an older version its TPM
// challenge secret. created reports a first start.
func Ensure(ctx context.Context, st store.Store, hostNames []string) (inst *store.Instance, created bool, err error) {
	inst, err = st.Instance(ctx)
	if errors.Is(err, store.ErrNotFound) {
		fresh, err := newInstance(hostNames)
		if err != nil {
			return nil, false, err
		}
		// The owner policy first: a node that dies between the two writes
		// then leaves a policy without an instance, which the next start
		// completes, rather than an instance nobody can manage. Create-only,
		// so that of nodes starting together one policy wins.
		owner := &store.Policy{Name: dps.OwnerPolicyName, PrimaryKey: sas.NewKey(dps.PolicyKeyBytes), SecondaryKey: sas.NewKey(dps.PolicyKeyBytes), Rights: slices.Clone(dps.AllRights)}
		if _, err := st.PutPolicy(ctx, owner, ""); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, false, fmt.Errorf("creating the owner policy: %w", err)
		}
		// Several nodes may start on one empty database: the store keeps
		// the first instance, and every node adopts it.
		inst, err = st.InitInstance(ctx, fresh)
		if err != nil {
			return nil, false, err
		}
		created = inst.IDScope == fresh.IDScope
	} else if err != nil {
		return nil, false, err
	}
	if len(inst.TPMChallengeSecret) == 0 {
		// An instance made by a version without TPM attestation. The store
		// keeps the first secret a node sets; every node reads that one.
		inst.TPMChallengeSecret = newSecret()
		if err := st.UpdateInstance(ctx, inst); err != nil {
			return nil, false, fmt.Errorf("saving the TPM challenge secret: %w", err)
		}
		if inst, err = st.Instance(ctx); err != nil {
			return nil, false, err
		}
	}
	if needsReissue(inst, hostNames, time.Now()) {
		if err := issueServerCert(inst, hostNames); err != nil {
			return nil, false, err
		}
		if err := st.UpdateInstance(ctx, inst); err != nil {
			return nil, false, fmt.Errorf("saving the reissued server certificate: %w", err)
		}
	}
	return inst, created, nil
}

// newSecret returns a TPM challenge secret: 32 random bytes.
func newSecret() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func newInstance(hostNames []string) (*store.Instance, error) {
	ca, caKey, err := pki.NewRootCA(pki.Options{CommonName: serverCACommonName, Days: caValidityDays, KeyType: pki.KeyECDSAP256})
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalPrivateKeyPEM(caKey, nil)
	if err != nil {
		return nil, err
	}
	inst := &store.Instance{
		IDScope:            NewIDScope(),
		CreatedAt:          time.Now().UTC(),
		AllocationPolicy:   dps.AllocationHashed,
		ServerCACertPEM:    pki.EncodePEM(ca),
		ServerCAKeyPEM:     keyPEM,
		TPMChallengeSecret: newSecret(),
	}
	return inst, issueServerCert(inst, hostNames)
}

// issueServerCert signs a server certificate for localhost, the loopback
// addresses, every host name the instance was ever started with, and hostNames.
func issueServerCert(inst *store.Instance, hostNames []string) error {
	ca, err := pki.ParseCertificate(string(inst.ServerCACertPEM))
	if err != nil {
		return fmt.Errorf("server CA: %w", err)
	}
	caKey, err := pki.ParsePrivateKeyPEM(inst.ServerCAKeyPEM, nil)
	if err != nil {
		return fmt.Errorf("server CA key: %w", err)
	}
	for _, h := range hostNames {
		if !slices.Contains(inst.HostNames, h) {
			inst.HostNames = append(inst.HostNames, h)
		}
	}
	hosts := pki.ServerHosts(inst.HostNames...)
	cert, key, err := pki.NewLeaf(pki.Options{
		CommonName:  hosts[0],
		Days:        serverValidityDays,
		KeyType:     pki.KeyECDSAP256,
		Hosts:       hosts,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	if err != nil {
		return err
	}
	keyPEM, err := pki.MarshalPrivateKeyPEM(key, nil)
	if err != nil {
		return err
	}
	inst.ServerCertPEM, inst.ServerKeyPEM = pki.EncodePEM(cert, ca), keyPEM
	return nil
}

func needsReissue(inst *store.Instance, hostNames []string, now time.Time) bool {
	certs, err := pki.ParseCertificates(inst.ServerCertPEM)
	if err != nil || len(certs) == 0 {
		return true
	}
	leaf := certs[0]
	if leaf.NotAfter.Sub(now) < renewBefore {
		return true
	}
	for _, h := range pki.ServerHosts(hostNames...) {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
				return true
			}
		} else if !slices.Contains(leaf.DNSNames, h) {
			return true
		}
	}
	return false
}

// TLSCertificate returns the server certificate (with the CA in its chain).
func TLSCertificate(inst *store.Instance) (tls.Certificate, error) {
	c, err := tls.X509KeyPair(inst.ServerCertPEM, inst.ServerKeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	return c, nil
}
