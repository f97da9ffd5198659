package console

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

// kind is individual enrollments or enrollment groups: the console pages of
// both are one implementation, as the API's are.
type kind struct {
	Path    string // console and API path segment: enrollments, groups
	API     string // service API collection
	Noun    string // "individual enrollment"
	Title   string // "Individual enrollment"
	Plural  string
	IDLabel string // "Registration ID"
	Group   bool
}

var (
	individualKind = &kind{Path: "enrollments", API: "/enrollments", Noun: "individual enrollment", Title: "Individual enrollment", Plural: "Individual enrollments", IDLabel: "Registration ID"}
	groupKind      = &kind{Path: "groups", API: "/enrollmentGroups", Noun: "enrollment group", Title: "Enrollment group", Plural: "Enrollment groups", IDLabel: "Enrollment group ID", Group: true}
)

// record is an enrollment or a group as the console handles it: the
// settings both share, and the fields of individual enrollments.
type record struct {
	ID string
	dps.EnrollmentSettings
	DeviceID          string
	RegistrationState *dps.DeviceRegistrationState
	raw               json.RawMessage
}

func (k *kind) decode(raw json.RawMessage) (*record, error) {
	rec := &record{raw: raw}
	if k.Group {
		var g dps.EnrollmentGroup
		if err := json.Unmarshal(raw, &g); err != nil {
			return nil, err
		}
		rec.ID, rec.EnrollmentSettings = g.EnrollmentGroupID, g.EnrollmentSettings
		return rec, nil
	}
	var e dps.IndividualEnrollment
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, err
	}
	rec.ID, rec.EnrollmentSettings, rec.DeviceID, rec.RegistrationState = e.RegistrationID, e.EnrollmentSettings, e.DeviceID, e.RegistrationState
	return rec, nil
}

// body is what a write sends: the record as read, its fields replaced by
// the form's, so that what the form does not show (optional device
// information, say) is kept.
func (k *kind) body(rec *record) (any, error) {
	var m map[string]json.RawMessage
	if len(rec.raw) > 0 {
		if err := json.Unmarshal(rec.raw, &m); err != nil {
			return nil, err
		}
	} else {
		m = map[string]json.RawMessage{}
	}
	var v any
	if k.Group {
		v = dps.EnrollmentGroup{EnrollmentGroupID: rec.ID, EnrollmentSettings: rec.EnrollmentSettings}
	} else {
		v = dps.IndividualEnrollment{RegistrationID: rec.ID, DeviceID: rec.DeviceID, EnrollmentSettings: rec.EnrollmentSettings}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	// Members the form owns but left empty are removed, not kept.
	for _, name := range []string{"deviceId", "iotHubs", "allocationPolicy", "customAllocationDefinition", "initialTwin", "iotHubHostName", "registrationState"} {
		delete(m, name)
	}
	for name, v := range fields {
		m[name] = v
	}
	return m, nil
}

// form is an enrollment form as posted.
type form struct {
	ID, Attestation, PrimaryKey, SecondaryKey, Certificate, CAReference, EndorsementKey string
	DeviceID, Status, IotHubs, AllocationPolicy, WebhookURL, WebhookAPIVersion          string
	Tags, Desired, Reprovision, Etag                                                    string
	Edge                                                                                bool
}

// formOf is the form that shows rec.
func formOf(rec *record) *form {
	f := &form{ID: rec.ID, DeviceID: rec.DeviceID, Status: rec.ProvisioningStatus, IotHubs: strings.Join(rec.Hubs(), ", "),
		AllocationPolicy: rec.AllocationPolicy, Etag: rec.Etag, Reprovision: "reprovisionandmigratedata"}
	if a := rec.Attestation; a != nil {
		f.Attestation = a.Type
		if a.X509 != nil && a.X509.CAReferences != nil {
			f.CAReference = a.X509.CAReferences.Primary
		}
	}
	if d := rec.CustomAllocationDefinition; d != nil {
		f.WebhookURL, f.WebhookAPIVersion = d.WebhookURL, d.APIVersion
	}
	if t := rec.InitialTwin; t != nil {
		f.Tags = string(t.Tags)
		if t.Properties != nil {
			f.Desired = string(t.Properties.Desired)
		}
	}
	if rec.Capabilities != nil {
		f.Edge = rec.Capabilities.IotEdge
	}
	f.Reprovision = dps.ReprovisionPolicyName(rec.ReprovisionPolicy)
	return f
}

func readForm(r *http.Request) (*form, error) {
	v := func(name string) string { return strings.TrimSpace(r.PostFormValue(name)) }
	cert, err := formText(r, "certificate", "certificateFile")
	if err != nil {
		return nil, err
	}
	return &form{
		ID: v("id"), Attestation: v("attestation"), PrimaryKey: v("primaryKey"), SecondaryKey: v("secondaryKey"),
		Certificate: cert, CAReference: v("caReference"), EndorsementKey: v("endorsementKey"),
		DeviceID: v("deviceId"), Status: v("provisioningStatus"), IotHubs: v("iotHubs"), AllocationPolicy: v("allocationPolicy"),
		WebhookURL: v("webhookUrl"), WebhookAPIVersion: v("webhookApiVersion"), Tags: v("tags"), Desired: v("desired"),
		Reprovision: v("reprovision"), Etag: v("etag"), Edge: v("edge") == "on",
	}, nil
}

// apply sets rec's fields from the form. Only what the form says is
// changed; the attestation's secrets the form leaves empty are left out,
// and the service keeps the stored ones (or generates keys on create).
func (f *form) apply(rec *record, group bool) error {
	for _, j := range []struct{ name, v string }{{"initial twin tags", f.Tags}, {"initial twin desired properties", f.Desired}} {
		if j.v != "" && !json.Valid([]byte(j.v)) {
			return fmt.Errorf("the %s are not JSON", j.name)
		}
	}
	a := rec.Attestation
	if a == nil || !strings.EqualFold(a.Type, f.Attestation) {
		a = &dps.AttestationMechanism{Type: f.Attestation}
	}
	switch strings.ToLower(f.Attestation) {
	case "symmetrickey":
		if f.PrimaryKey != "" || f.SecondaryKey != "" {
			a.SymmetricKey = &dps.SymmetricKeyAttestation{PrimaryKey: f.PrimaryKey, SecondaryKey: f.SecondaryKey}
		}
	case "x509":
		if a.X509 == nil {
			a.X509 = &dps.X509Attestation{}
		}
		if f.Certificate != "" {
			c := &dps.X509Certificates{Primary: &dps.X509CertificateWithInfo{Certificate: f.Certificate}}
			if group {
				a.X509.SigningCertificates, a.X509.CAReferences = c, nil
			} else {
				a.X509.ClientCertificates = c
			}
		}
		if group && f.CAReference != "" {
			a.X509.CAReferences, a.X509.SigningCertificates = &dps.X509CAReferences{Primary: f.CAReference}, nil
		}
	case "tpm":
		if f.EndorsementKey != "" {
			a.TPM = &dps.TPMAttestation{EndorsementKey: f.EndorsementKey}
		}
	}
	rec.Attestation = a
	rec.DeviceID = f.DeviceID
	rec.ProvisioningStatus = f.Status
	rec.IotHubs = strings.FieldsFunc(f.IotHubs, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })
	rec.IotHubHostName = ""
	rec.AllocationPolicy = f.AllocationPolicy
	rec.CustomAllocationDefinition = nil
	if f.WebhookURL != "" || f.WebhookAPIVersion != "" {
		rec.CustomAllocationDefinition = &dps.CustomAllocationDefinition{WebhookURL: f.WebhookURL, APIVersion: f.WebhookAPIVersion}
	}
	rec.InitialTwin = nil
	if f.Tags != "" || f.Desired != "" {
		rec.InitialTwin = &dps.InitialTwin{Tags: json.RawMessage(f.Tags)}
		if f.Desired != "" {
			rec.InitialTwin.Properties = &dps.InitialTwinProperties{Desired: json.RawMessage(f.Desired)}
		}
	}
	rec.Capabilities = &dps.DeviceCapabilities{IotEdge: f.Edge}
	p, ok := dps.ReprovisionPolicies[cmp.Or(f.Reprovision, dps.ReprovisionPolicyName(nil))]
	if !ok {
		return fmt.Errorf("reprovisioning %q is not reprovisionandmigratedata, reprovisionandresetdata or never", f.Reprovision)
	}
	rec.ReprovisionPolicy = &p
	return nil
}

type listData struct {
	Kind    *kind
	Query   string
	Items   []*record
	Next    string // continuation of the next page
	Scanned int    // records searched (with a query)
	More    bool   // the search stopped before the end
}

type recordData struct {
	Kind *kind
	New  bool
	Rec  *record
	Form *form
	// Keys are the symmetric keys, when the user asked to reveal them.
	Keys *dps.SymmetricKeyAttestation
	// Records are the registration records of a group's devices.
	Records []dps.DeviceRegistrationState
}

// Search limits: a search reads at most searchPages pages of pageMax.
const (
	pageMax      = 1000
	searchPages  = 20
	listPageSize = 50
)

func (c *Console) enrollments(w http.ResponseWriter, r *http.Request, s *session, k *kind, segs []string) {
	v := &view{Title: k.Plural, Nav: k.Path, Session: s, Notice: notice(r)}
	switch {
	case len(segs) == 0 && r.Method == http.MethodPost:
		c.writeRecord(w, r, v, k, "", true)
	case len(segs) == 0:
		c.listRecords(w, r, v, k)
	case len(segs) == 1 && segs[0] == "new":
		v.Title = "New " + k.Noun
		rec := &record{}
		c.render(w, http.StatusOK, "enrollment", withData(v, &recordData{Kind: k, New: true, Rec: rec, Form: &form{Attestation: dps.AttestationSymmetricKey, Status: dps.ProvisioningEnabled, Reprovision: "reprovisionandmigratedata"}}))
	case len(segs) == 1 && r.Method == http.MethodPost:
		c.writeRecord(w, r, v, k, segs[0], false)
	case len(segs) == 1:
		c.showRecord(w, r, v, k, segs[0], false)
	case len(segs) == 2 && r.Method == http.MethodPost:
		c.recordAction(w, r, v, k, segs[0], segs[1])
	default:
		c.fail(w, r, s, http.StatusNotFound, "no console page at %s", r.URL.Path)
	}
}

func withData(v *view, d any) *view { v.Data = d; return v }

func (c *Console) listRecords(w http.ResponseWriter, r *http.Request, v *view, k *kind) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	d := &listData{Kind: k, Query: q}
	v.Data = d
	cont := r.URL.Query().Get("next")
	size := listPageSize
	if q != "" {
		size = pageMax
	}
	for page := 0; ; page++ {
		h := http.Header{"X-Ms-Max-Item-Count": {fmt.Sprint(size)}}
		if cont != "" {
			h.Set("X-Ms-Continuation", cont)
		}
		var raw []json.RawMessage
		hdr, err := c.call(r, v.Session, http.MethodPost, k.API+"/query", h, dps.QuerySpecification{Query: "SELECT *"}, &raw)
		if err != nil {
			v.Error = asAPIError(err)
			c.render(w, v.Error.Status, "enrollments", v)
			return
		}
		for _, item := range raw {
			rec, err := k.decode(item)
			if err != nil {
				continue
			}
			d.Scanned++
			if q == "" || strings.Contains(strings.ToLower(rec.ID), strings.ToLower(q)) {
				d.Items = append(d.Items, rec)
			}
		}
		cont = hdr.Get("x-ms-continuation")
		if q == "" {
			d.Next = cont
			break
		}
		if cont == "" {
			break
		}
		if page+1 == searchPages || len(d.Items) >= listPageSize {
			d.More = true
			break
		}
	}
	c.render(w, http.StatusOK, "enrollments", v)
}

// get reads a record as the API renders a read (no keys).
func (c *Console) get(r *http.Request, s *session, k *kind, id string) (*record, error) {
	var raw json.RawMessage
	if _, err := c.call(r, s, http.MethodGet, k.API+"/"+esc(id), nil, nil, &raw); err != nil {
		return nil, err
	}
	return k.decode(raw)
}

func (c *Console) showRecord(w http.ResponseWriter, r *http.Request, v *view, k *kind, id string, reveal bool) {
	rec, err := c.get(r, v.Session, k, id)
	if err != nil {
		v.Error = asAPIError(err)
		c.render(w, v.Error.Status, "error", v)
		return
	}
	v.Title = k.Title + " " + rec.ID
	d := &recordData{Kind: k, Rec: rec, Form: formOf(rec)}
	if reveal {
		var a dps.AttestationMechanism
		if _, err := c.call(r, v.Session, http.MethodPost, k.API+"/"+esc(id)+"/attestationmechanism", nil, nil, &a); err != nil {
			v.Error = asAPIError(err)
		} else if a.SymmetricKey != nil {
			d.Keys = a.SymmetricKey
		}
	}
	if k.Group {
		var regs []dps.DeviceRegistrationState
		h := http.Header{"X-Ms-Max-Item-Count": {fmt.Sprint(listPageSize)}}
		if _, err := c.call(r, v.Session, http.MethodPost, "/registrations/"+esc(id)+"/query", h, nil, &regs); err == nil {
			d.Records = regs
		}
	}
	status := http.StatusOK
	if v.Error != nil {
		status = v.Error.Status
	}
	c.render(w, status, "enrollment", withData(v, d))
}

// writeRecord creates (create) or updates the record the form describes:
// an update applies the form to the record as read now and writes it
// under the etag the form was shown with.
func (c *Console) writeRecord(w http.ResponseWriter, r *http.Request, v *view, k *kind, id string, create bool) {
	f, err := readForm(r)
	if err != nil {
		c.fail(w, r, v.Session, http.StatusBadRequest, "%v", err)
		return
	}
	rec := &record{ID: f.ID}
	ifMatch := ""
	if !create {
		if rec, err = c.get(r, v.Session, k, id); err != nil {
			c.formError(w, v, k, create, &record{ID: id}, f, err)
			return
		}
		ifMatch = f.Etag
		if ifMatch == "" {
			ifMatch = rec.Etag
		}
	}
	if err := f.apply(rec, k.Group); err != nil {
		c.formError(w, v, k, create, rec, f, &apiError{Status: http.StatusBadRequest, Message: err.Error()})
		return
	}
	body, err := k.body(rec)
	if err != nil {
		c.formError(w, v, k, create, rec, f, err)
		return
	}
	if rec.ID == "" {
		c.formError(w, v, k, create, rec, f, &apiError{Status: http.StatusBadRequest, Message: k.IDLabel + " is required"})
		return
	}
	var h http.Header
	if ifMatch != "" {
		h = http.Header{"If-Match": {ifMatch}}
	}
	if _, err := c.call(r, v.Session, http.MethodPut, k.API+"/"+esc(rec.ID), h, body, nil); err != nil {
		c.formError(w, v, k, create, rec, f, err)
		return
	}
	done := "updated"
	if create {
		done = "created"
	}
	seeOther(w, r, "/"+k.Path+"/"+esc(rec.ID), done)
}

// formError shows the form again, as posted, with the refusal.
func (c *Console) formError(w http.ResponseWriter, v *view, k *kind, create bool, rec *record, f *form, err error) {
	v.Error = asAPIError(err)
	if create {
		v.Title = "New " + k.Noun
	} else {
		v.Title = k.Title + " " + rec.ID
	}
	c.render(w, v.Error.Status, "enrollment", withData(v, &recordData{Kind: k, New: create, Rec: rec, Form: f}))
}

// recordAction runs one of the buttons of a record's page.
func (c *Console) recordAction(w http.ResponseWriter, r *http.Request, v *view, k *kind, id, action string) {
	switch action {
	case "keys":
		c.showRecord(w, r, v, k, id, true)
	case "delete":
		h := http.Header{"If-Match": {r.PostFormValue("etag")}}
		if _, err := c.call(r, v.Session, http.MethodDelete, k.API+"/"+esc(id), h, nil, nil); err != nil {
			c.actionError(w, r, v, k, id, err)
			return
		}
		seeOther(w, r, "/"+k.Path, "deleted")
	case "enable", "disable":
		rec, err := c.get(r, v.Session, k, id)
		if err != nil {
			c.actionError(w, r, v, k, id, err)
			return
		}
		rec.ProvisioningStatus = action + "d"
		body, err := k.body(rec)
		if err == nil {
			_, err = c.call(r, v.Session, http.MethodPut, k.API+"/"+esc(id), http.Header{"If-Match": {rec.Etag}}, body, nil)
		}
		if err != nil {
			c.actionError(w, r, v, k, id, err)
			return
		}
		seeOther(w, r, "/"+k.Path+"/"+esc(id), action+"d")
	default:
		c.fail(w, r, v.Session, http.StatusNotFound, "no action %q", action)
	}
}

// actionError shows the record's page with the refusal of an action.
func (c *Console) actionError(w http.ResponseWriter, r *http.Request, v *view, k *kind, id string, err error) {
	v.Error = asAPIError(err)
	status := v.Error.Status
	rec, gerr := c.get(r, v.Session, k, id)
	if gerr != nil {
		c.render(w, status, "error", v)
		return
	}
	v.Title = k.Title + " " + rec.ID
	c.render(w, status, "enrollment", withData(v, &recordData{Kind: k, Rec: rec, Form: formOf(rec)}))
}
