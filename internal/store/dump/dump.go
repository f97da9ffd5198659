// Package dump moves a dpsd instance between databases: Export writes every
// record of a store as JSON lines, Import writes them into another store
// with their etags and timestamps, so that devices and service clients
// cannot tell the databases apart. Both stream: memory stays constant
// whatever the number of enrollments.
//
// The format, one JSON object per line, each with exactly one key naming
// what it holds:
//
//	{"header":{"format":"dpsd-export","version":1,"idScope":"0ne...","counts":{...},...}}
//	{"instance":{"idScope":...,"serverCaKeyPem":...}}      the ID scope, server CA and certificate, keys, TPM challenge secret
//	{"policy":{...}}                                        shared access policies, with keys
//	{"caCertificate":{...}}                                 CA certificates
//	{"linkedHub":{...}}                                     linked IoT hubs, with connection strings and registry webhook secrets
//	{"enrollmentGroup":{...}}                               as the service API shows them
//	{"enrollment":{...}}                                    as the service API shows them
//	{"registration":{"result":{...},...}}                   registration records
//	{"issuingCA":{...}}                                     issuing CAs, with their private keys
//	{"issuedCertificate":{...}}                             certificates they issued, revocations included
//	{"end":{"counts":{...}}}                                what was written, to detect a cut file
//
// Operations are not exported: they expire within a day, and a device that
// polls one it started on the old database registers again.
//
// The export holds every secret of the instance (the server CA key, the TPM
// challenge secret, the issuing CAs' keys, policy keys, enrollment keys, hub
// connection strings, registry webhook secrets); keep it like a private key.
package dump

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/store"
)

// Format and Version identify the file format in its header.
const (
	Format  = "dpsd-export"
	Version = 1
)

// pageSize is how many records Export reads at a time, and batchSize how
// many Import writes per transaction.
const (
	pageSize  = 1000
	batchSize = 500
	// maxLine bounds one record, so that a file without line breaks cannot
	// exhaust memory.
	maxLine = 64 << 20
)

// ErrOtherInstance means the target database holds another instance.
var ErrOtherInstance = errors.New("the database holds another instance")

// Header is the first line of an export.
type Header struct {
	Format      string    `json:"format"`
	Version     int       `json:"version"`
	ExportedAt  time.Time `json:"exportedAt"`
	DpsdVersion string    `json:"dpsdVersion,omitempty"`
	IDScope     string    `json:"idScope"`
	// Counts are the store's counts when the export started (operations
	// excluded); the end line has what was written.
	Counts store.Counts `json:"counts"`
}

// End is the last line of an export.
type End struct {
	Counts store.Counts `json:"counts"`
}

// Total is the number of records the counts stand for (operations are not
// exported).
func Total(c *store.Counts) int64 {
	return c.Policies + c.CACertificates + c.LinkedHubs + c.Groups + c.Enrollments + c.Registrations +
		c.IssuingCAs + c.IssuedCertificates
}

// line is one line of the file; exactly one field is set.
type line struct {
	Header        *Header                   `json:"header,omitempty"`
	Instance      *instance                 `json:"instance,omitempty"`
	Policy        *policy                   `json:"policy,omitempty"`
	CACertificate *caCertificate            `json:"caCertificate,omitempty"`
	LinkedHub     *linkedHub                `json:"linkedHub,omitempty"`
	Group         *dps.EnrollmentGroup      `json:"enrollmentGroup,omitempty"`
	Enrollment    *dps.IndividualEnrollment `json:"enrollment,omitempty"`
	Registration  *registration             `json:"registration,omitempty"`
	IssuingCA     *issuingCA                `json:"issuingCA,omitempty"`
	Issued        *issuedCertificate        `json:"issuedCertificate,omitempty"`
	End           *End                      `json:"end,omitempty"`
}

// The records whose store types carry no JSON names get them here, fixed,
// so that renaming a Go field cannot change the format.

type instance struct {
	IDScope          string    `json:"idScope"`
	CreatedAt        time.Time `json:"createdAt"`
	AllocationPolicy string    `json:"allocationPolicy,omitempty"`
	ServerCACertPEM  string    `json:"serverCaCertPem"`
	ServerCAKeyPEM   string    `json:"serverCaKeyPem"`
	ServerCertPEM    string    `json:"serverCertPem,omitempty"`
	ServerKeyPEM     string    `json:"serverKeyPem,omitempty"`
	HostNames        []string  `json:"hostNames,omitempty"`
	// TPMChallengeSecret is base64 in JSON; an export without it makes an
	// instance that gets a new one at its first start.
	TPMChallengeSecret []byte `json:"tpmChallengeSecret,omitempty"`
}

type policy struct {
	Name         string    `json:"name"`
	PrimaryKey   string    `json:"primaryKey"`
	SecondaryKey string    `json:"secondaryKey"`
	Rights       []string  `json:"rights"`
	Etag         string    `json:"etag"`
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

type caCertificate struct {
	Name             string    `json:"name"`
	Certificate      []byte    `json:"certificate"` // DER, base64 in JSON
	SHA256Thumbprint string    `json:"sha256Thumbprint"`
	IsVerified       bool      `json:"isVerified"`
	VerificationCode string    `json:"verificationCode,omitempty"`
	Etag             string    `json:"etag"`
	Created          time.Time `json:"created"`
	Updated          time.Time `json:"updated"`
}

type linkedHub struct {
	Name                  string    `json:"name"`
	ConnectionString      string    `json:"connectionString,omitempty"`
	Location              string    `json:"location,omitempty"`
	AllocationWeight      int       `json:"allocationWeight"`
	ApplyAllocationPolicy bool      `json:"applyAllocationPolicy"`
	DeviceRegistry        string    `json:"deviceRegistry,omitempty"`
	RegistryWebhookURL    string    `json:"registryWebhookUrl,omitempty"`
	RegistryWebhookSecret string    `json:"registryWebhookSecret,omitempty"`
	Etag                  string    `json:"etag"`
	Created               time.Time `json:"created"`
	Updated               time.Time `json:"updated"`
}

type registration struct {
	Result            *dps.DeviceRegistrationResult `json:"result"`
	EnrollmentGroupID string                        `json:"enrollmentGroupId,omitempty"`
	// DevicePayload is base64 in JSON: the store keeps it byte for byte.
	DevicePayload []byte           `json:"devicePayload,omitempty"`
	Placement     *placement       `json:"placement,omitempty"`
	AppliedTwin   *dps.InitialTwin `json:"appliedTwin,omitempty"`
}

type placement struct {
	Hub      string `json:"hub"`
	DeviceID string `json:"deviceId"`
}

func placementOf(p store.Placement) *placement {
	if p.IsZero() {
		return nil
	}
	return &placement{Hub: p.Hub, DeviceID: p.DeviceID}
}

func (p *placement) store() store.Placement {
	if p == nil {
		return store.Placement{}
	}
	return store.Placement{Hub: p.Hub, DeviceID: p.DeviceID}
}

type issuingCA struct {
	Name                    string    `json:"name"`
	Certificate             []byte    `json:"certificate"` // DER, base64 in JSON
	Chain                   [][]byte  `json:"chain,omitempty"`
	PrivateKeyPEM           string    `json:"privateKeyPem"`
	Origin                  string    `json:"origin"`
	CertificateValidityDays int       `json:"certificateValidityDays"`
	ExtendedKeyUsages       []string  `json:"extendedKeyUsages"`
	Etag                    string    `json:"etag"`
	Created                 time.Time `json:"created"`
	Updated                 time.Time `json:"updated"`
}

type issuedCertificate struct {
	SerialNumber      string     `json:"serialNumber"`
	RegistrationID    string     `json:"registrationId"`
	EnrollmentGroupID string     `json:"enrollmentGroupId,omitempty"`
	IssuingCA         string     `json:"issuingCA"`
	Certificate       []byte     `json:"certificate"` // DER, base64 in JSON
	SHA256Thumbprint  string     `json:"sha256Thumbprint"`
	NotBefore         time.Time  `json:"notBefore"`
	NotAfter          time.Time  `json:"notAfter"`
	Created           time.Time  `json:"created"`
	RevokedAt         *time.Time `json:"revokedAt,omitempty"`
	RevocationReason  string     `json:"revocationReason,omitempty"`
}

func issuedLine(c *store.IssuedCertificate) *issuedCertificate {
	l := &issuedCertificate{SerialNumber: c.SerialNumber, RegistrationID: c.RegistrationID, EnrollmentGroupID: c.EnrollmentGroupID,
		IssuingCA: c.IssuingCA, Certificate: c.CertificateDER, SHA256Thumbprint: c.SHA256Thumbprint,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, Created: c.Created, RevocationReason: c.RevocationReason}
	if c.Revoked() {
		l.RevokedAt = &c.RevokedAt
	}
	return l
}

func (l *issuedCertificate) record() *store.IssuedCertificate {
	c := &store.IssuedCertificate{SerialNumber: l.SerialNumber, RegistrationID: l.RegistrationID, EnrollmentGroupID: l.EnrollmentGroupID,
		IssuingCA: l.IssuingCA, CertificateDER: l.Certificate, SHA256Thumbprint: l.SHA256Thumbprint,
		NotBefore: l.NotBefore, NotAfter: l.NotAfter, Created: l.Created, RevocationReason: l.RevocationReason}
	if l.RevokedAt != nil {
		c.RevokedAt = *l.RevokedAt
	}
	return c
}

// ExportOptions tune Export.
type ExportOptions struct {
	// DpsdVersion is recorded in the header.
	DpsdVersion string
	// Header, if set, is called with the header before the records are
	// written (to size a progress bar).
	Header func(*Header)
	// Progress, if set, is called with the number of records written so
	// far, after every page.
	Progress func(done int64)
}

// Export writes the header, the instance and every record of st to w, and
// returns what it wrote. It reads the store page by page, so a store being
// written meanwhile yields each record as it was when its page was read;
// stop the writers (or accept that) for a point-in-time copy.
func Export(ctx context.Context, st store.Store, w io.Writer, opts ExportOptions) (*store.Counts, error) {
	inst, err := st.Instance(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errors.New("the database holds no instance: start dpsd serve on it once, or export another database")
	}
	if err != nil {
		return nil, err
	}
	start, err := st.Counts(ctx)
	if err != nil {
		return nil, err
	}
	start.Operations = 0

	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	var n store.Counts
	var done int64
	put := func(l *line, count *int64) error {
		if err := enc.Encode(l); err != nil {
			return err
		}
		if count != nil {
			*count++
			done++
		}
		return nil
	}
	progress := func() {
		if opts.Progress != nil {
			opts.Progress(done)
		}
	}

	h := &Header{Format: Format, Version: Version, ExportedAt: time.Now().UTC(),
		DpsdVersion: opts.DpsdVersion, IDScope: inst.IDScope, Counts: *start}
	if opts.Header != nil {
		opts.Header(h)
	}
	if err := put(&line{Header: h}, nil); err != nil {
		return nil, err
	}
	if err := put(&line{Instance: &instance{
		IDScope: inst.IDScope, CreatedAt: inst.CreatedAt, AllocationPolicy: inst.AllocationPolicy,
		ServerCACertPEM: string(inst.ServerCACertPEM), ServerCAKeyPEM: string(inst.ServerCAKeyPEM),
		ServerCertPEM: string(inst.ServerCertPEM), ServerKeyPEM: string(inst.ServerKeyPEM), HostNames: inst.HostNames,
		TPMChallengeSecret: inst.TPMChallengeSecret,
	}}, nil); err != nil {
		return nil, err
	}

	ps, err := st.Policies(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if err := put(&line{Policy: &policy{Name: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey,
			Rights: p.Rights, Etag: p.Etag, Created: p.Created, Updated: p.Updated}}, &n.Policies); err != nil {
			return nil, err
		}
	}
	cas, err := st.CACertificates(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range cas {
		if err := put(&line{CACertificate: &caCertificate{Name: c.Name, Certificate: c.CertificateDER,
			SHA256Thumbprint: c.SHA256Thumbprint, IsVerified: c.IsVerified, VerificationCode: c.VerificationCode,
			Etag: c.Etag, Created: c.Created, Updated: c.Updated}}, &n.CACertificates); err != nil {
			return nil, err
		}
	}
	hubs, err := st.LinkedHubs(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range hubs {
		if err := put(&line{LinkedHub: &linkedHub{Name: h.Name, ConnectionString: h.ConnectionString, Location: h.Location,
			AllocationWeight: h.AllocationWeight, ApplyAllocationPolicy: h.ApplyAllocationPolicy, DeviceRegistry: h.DeviceRegistry,
			RegistryWebhookURL: h.RegistryWebhookURL, RegistryWebhookSecret: h.RegistryWebhookSecret,
			Etag: h.Etag, Created: h.Created, Updated: h.Updated}}, &n.LinkedHubs); err != nil {
			return nil, err
		}
	}
	issuers, err := st.IssuingCAs(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range issuers {
		if err := put(&line{IssuingCA: &issuingCA{Name: c.Name, Certificate: c.CertificateDER, Chain: c.ChainDER,
			PrivateKeyPEM: string(c.PrivateKeyPEM), Origin: c.Origin, CertificateValidityDays: c.CertificateValidityDays,
			ExtendedKeyUsages: c.ExtendedKeyUsages, Etag: c.Etag, Created: c.Created, Updated: c.Updated}}, &n.IssuingCAs); err != nil {
			return nil, err
		}
	}
	progress()

	if err := pages(ctx, st.Groups, func(g *dps.EnrollmentGroup) error {
		return put(&line{Group: g}, &n.Groups)
	}, progress); err != nil {
		return nil, err
	}
	if err := pages(ctx, st.Enrollments, func(e *dps.IndividualEnrollment) error {
		return put(&line{Enrollment: e}, &n.Enrollments)
	}, progress); err != nil {
		return nil, err
	}
	if err := pages(ctx, st.Registrations, func(r *store.Registration) error {
		return put(&line{Registration: &registration{Result: r.Result, EnrollmentGroupID: r.EnrollmentGroupID,
			DevicePayload: r.DevicePayload, Placement: placementOf(r.Placement), AppliedTwin: r.AppliedTwin}}, &n.Registrations)
	}, progress); err != nil {
		return nil, err
	}
	allIssued := func(ctx context.Context, after string, limit int) (store.Page[*store.IssuedCertificate], error) {
		return st.IssuedCertificates(ctx, store.IssuedFilter{}, after, limit)
	}
	if err := pages(ctx, allIssued, func(c *store.IssuedCertificate) error {
		return put(&line{Issued: issuedLine(c)}, &n.IssuedCertificates)
	}, progress); err != nil {
		return nil, err
	}

	if err := put(&line{End: &End{Counts: n}}, nil); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return &n, nil
}

// pages calls each for every item of a keyset-paginated list.
func pages[T any](ctx context.Context, list func(ctx context.Context, after string, limit int) (store.Page[T], error),
	each func(T) error, progress func()) error {
	after := ""
	for {
		p, err := list(ctx, after, pageSize)
		if err != nil {
			return err
		}
		for _, v := range p.Items {
			if err := each(v); err != nil {
				return err
			}
		}
		progress()
		if p.Next == "" {
			return nil
		}
		after = p.Next
	}
}

// ImportOptions tune Import.
type ImportOptions struct {
	// Force replaces an instance the database already holds with the
	// exported one, where Import would otherwise fail with
	// ErrOtherInstance. The database's records are kept (and overwritten
	// where the export has the same key).
	Force bool
	// Header, if set, is called with the header before anything is written
	// (to size a progress bar).
	Header func(*Header)
	// Progress, if set, is called with the number of records written so
	// far, after every batch.
	Progress func(done int64)
}

// Import reads an export from r and writes it into st: the instance first
// (see ImportOptions.Force), then the records, with their etags and
// timestamps. Records with the key of one already in st replace it; others
// in st are kept. Everything is written in one transaction (RestoreAll): a
// file that fails anywhere, a cut file included, leaves st as it was.
// Import is idempotent. It returns what it wrote.
func Import(ctx context.Context, st store.Store, r io.Reader, opts ImportOptions) (*store.Counts, error) {
	var n *store.Counts
	err := st.RestoreAll(ctx, func(tx store.Restorer) error {
		var err error
		n, err = importInto(ctx, tx, r, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// importInto is Import inside the transaction; records go in batches, so
// that memory stays small.
func importInto(ctx context.Context, st store.Restorer, r io.Reader, opts ImportOptions) (*store.Counts, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256<<10), maxLine)
	var (
		n      store.Counts
		done   int64
		lineNo int
		header *Header
		inst   bool
		end    *End
		batch  = make([]store.Record, 0, batchSize)
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := st.Restore(ctx, batch); err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
		done += int64(len(batch))
		batch = batch[:0]
		if opts.Progress != nil {
			opts.Progress(done)
		}
		return nil
	}
	add := func(rec store.Record, count *int64) error {
		*count++
		batch = append(batch, rec)
		if len(batch) == batchSize {
			return flush()
		}
		return nil
	}

	for sc.Scan() {
		lineNo++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if end != nil {
			return nil, fmt.Errorf("line %d: a record after the end line", lineNo)
		}
		if err := dps.CheckJSONText(b); err != nil {
			return nil, fmt.Errorf("line %d: the record cannot be stored: %v; it was written by a dpsd that did not check its text: correct it on the exported instance (write it again through the service API) and export again", lineNo, err)
		}
		var l line
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, fmt.Errorf("line %d: %v", lineNo, err)
		}
		if k := l.kinds(); k != 1 {
			return nil, fmt.Errorf("line %d: a line holds exactly one record, this one %d (%.60s)", lineNo, k, b)
		}
		switch {
		case header == nil && l.Header == nil:
			return nil, fmt.Errorf("line %d: not a dpsd export (it does not start with a header line)", lineNo)
		case l.Header != nil:
			if header != nil {
				return nil, fmt.Errorf("line %d: a second header", lineNo)
			}
			if l.Header.Format != Format || l.Header.Version != Version {
				return nil, fmt.Errorf("line %d: format %q version %d; this dpsd reads %s version %d", lineNo,
					l.Header.Format, l.Header.Version, Format, Version)
			}
			header = l.Header
			if opts.Header != nil {
				opts.Header(header)
			}
		case !inst && l.Instance == nil:
			return nil, fmt.Errorf("line %d: the instance must follow the header", lineNo)
		case l.Instance != nil:
			if inst {
				return nil, fmt.Errorf("line %d: a second instance", lineNo)
			}
			if err := importInstance(ctx, st, l.Instance, opts.Force); err != nil {
				return nil, err
			}
			inst = true
		case l.End != nil:
			end = l.End
		default:
			rec, count, err := l.record(&n)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", lineNo, err)
			}
			if err := add(rec, count); err != nil {
				return nil, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", lineNo+1, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	switch {
	case header == nil:
		return nil, errors.New("the file is empty")
	case end == nil:
		return nil, fmt.Errorf("the export ends without its end line after %d lines: it was cut short; import a complete export", lineNo)
	case end.Counts != n:
		return nil, fmt.Errorf("the end line counts %+v, but the file holds %+v", end.Counts, n)
	}
	return &n, nil
}

func (l *line) kinds() int {
	k := 0
	for _, set := range []bool{l.Header != nil, l.Instance != nil, l.Policy != nil, l.CACertificate != nil,
		l.LinkedHub != nil, l.Group != nil, l.Enrollment != nil, l.Registration != nil, l.IssuingCA != nil, l.Issued != nil, l.End != nil} {
		if set {
			k++
		}
	}
	return k
}

// record converts a record line and returns the count it adds to.
func (l *line) record(n *store.Counts) (store.Record, *int64, error) {
	switch {
	case l.Policy != nil:
		p := l.Policy
		return store.Record{Policy: &store.Policy{Name: p.Name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey,
			Rights: p.Rights, Etag: p.Etag, Created: p.Created, Updated: p.Updated}}, &n.Policies, nil
	case l.CACertificate != nil:
		c := l.CACertificate
		return store.Record{CACertificate: &store.CACertificate{Name: c.Name, CertificateDER: c.Certificate,
			SHA256Thumbprint: c.SHA256Thumbprint, IsVerified: c.IsVerified, VerificationCode: c.VerificationCode,
			Etag: c.Etag, Created: c.Created, Updated: c.Updated}}, &n.CACertificates, nil
	case l.LinkedHub != nil:
		h := l.LinkedHub
		return store.Record{LinkedHub: &store.LinkedHub{Name: h.Name, ConnectionString: h.ConnectionString, Location: h.Location,
			AllocationWeight: h.AllocationWeight, ApplyAllocationPolicy: h.ApplyAllocationPolicy, DeviceRegistry: h.DeviceRegistry,
			RegistryWebhookURL: h.RegistryWebhookURL, RegistryWebhookSecret: h.RegistryWebhookSecret,
			Etag: h.Etag, Created: h.Created, Updated: h.Updated}}, &n.LinkedHubs, nil
	case l.Group != nil:
		return store.Record{Group: l.Group}, &n.Groups, nil
	case l.Enrollment != nil:
		return store.Record{Enrollment: l.Enrollment}, &n.Enrollments, nil
	case l.Registration != nil:
		r := l.Registration
		if r.Result == nil {
			return store.Record{}, nil, errors.New("a registration without its result")
		}
		return store.Record{Registration: &store.Registration{Result: r.Result, EnrollmentGroupID: r.EnrollmentGroupID,
			DevicePayload: r.DevicePayload, Placement: r.Placement.store(), AppliedTwin: r.AppliedTwin}}, &n.Registrations, nil
	case l.IssuingCA != nil:
		c := l.IssuingCA
		return store.Record{IssuingCA: &store.IssuingCA{Name: c.Name, CertificateDER: c.Certificate, ChainDER: c.Chain,
			PrivateKeyPEM: []byte(c.PrivateKeyPEM), Origin: c.Origin, CertificateValidityDays: c.CertificateValidityDays,
			ExtendedKeyUsages: c.ExtendedKeyUsages, Etag: c.Etag, Created: c.Created, Updated: c.Updated}}, &n.IssuingCAs, nil
	case l.Issued != nil:
		return store.Record{IssuedCertificate: l.Issued.record()}, &n.IssuedCertificates, nil
	}
	return store.Record{}, nil, errors.New("not a record")
}

// importInstance writes the exported instance unless the database holds
// another one (and force is not set).
func importInstance(ctx context.Context, st store.Restorer, in *instance, force bool) error {
	if in.IDScope == "" || in.ServerCACertPEM == "" || in.ServerCAKeyPEM == "" {
		return errors.New("the instance line lacks the ID scope or the server CA")
	}
	exp := &store.Instance{IDScope: in.IDScope, CreatedAt: in.CreatedAt, AllocationPolicy: in.AllocationPolicy,
		ServerCACertPEM: []byte(in.ServerCACertPEM), ServerCAKeyPEM: []byte(in.ServerCAKeyPEM),
		ServerCertPEM: bytesOrNil(in.ServerCertPEM), ServerKeyPEM: bytesOrNil(in.ServerKeyPEM), HostNames: in.HostNames,
		TPMChallengeSecret: in.TPMChallengeSecret}
	cur, err := st.Instance(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	case cur.IDScope == exp.IDScope && bytes.Equal(cur.ServerCACertPEM, exp.ServerCACertPEM):
		// The same instance, imported again.
	case !force:
		return fmt.Errorf("%w: the database serves ID scope %s, the export ID scope %s", ErrOtherInstance, cur.IDScope, exp.IDScope)
	}
	return st.RestoreInstance(ctx, exp)
}

func bytesOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}
