package console

import (
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

type certificatesData struct {
	Items []dps.CertificateResponse
	// Upload is the upload form as posted, shown again with a refusal.
	Upload struct {
		Name, Certificate string
		Verified          bool
	}
}

type certificateData struct {
	Cert dps.CertificateResponse
	// Code is the verification code just generated.
	Code string
}

func (c *Console) certificates(w http.ResponseWriter, r *http.Request, s *session, segs []string) {
	v := &view{Title: "CA certificates", Nav: "certificates", Session: s, Notice: notice(r)}
	switch {
	case len(segs) == 0 && r.Method == http.MethodPost:
		c.uploadCertificate(w, r, v)
	case len(segs) == 0:
		c.listCertificates(w, r, v, &certificatesData{}, http.StatusOK)
	case len(segs) == 1 && r.Method != http.MethodPost:
		c.showCertificate(w, r, v, segs[0], "", http.StatusOK)
	case len(segs) == 2 && r.Method == http.MethodPost:
		c.certificateAction(w, r, v, segs[0], segs[1])
	default:
		c.fail(w, r, s, http.StatusNotFound, "no console page at %s", r.URL.Path)
	}
}

func (c *Console) listCertificates(w http.ResponseWriter, r *http.Request, v *view, d *certificatesData, status int) {
	var list dps.CertificateListDescription
	if _, err := c.call(r, v.Session, http.MethodGet, "/certificates", nil, nil, &list); err != nil && v.Error == nil {
		v.Error = asAPIError(err)
		status = v.Error.Status
	}
	d.Items = list.Value
	c.render(w, status, "certificates", withData(v, d))
}

func (c *Console) uploadCertificate(w http.ResponseWriter, r *http.Request, v *view) {
	d := &certificatesData{}
	d.Upload.Name = strings.TrimSpace(r.PostFormValue("name"))
	d.Upload.Verified = r.PostFormValue("verified") == "on"
	pem, err := formText(r, "certificate", "certificateFile")
	if err != nil {
		c.fail(w, r, v.Session, http.StatusBadRequest, "%v", err)
		return
	}
	d.Upload.Certificate = pem
	verified := d.Upload.Verified
	body := dps.CertificateBody{Certificate: pem, IsVerified: &verified}
	if d.Upload.Name == "" {
		v.Error = &apiError{Status: http.StatusBadRequest, Message: "the certificate needs a name"}
	} else if _, err := c.call(r, v.Session, http.MethodPut, "/certificates/"+esc(d.Upload.Name), nil, body, nil); err != nil {
		v.Error = asAPIError(err)
	}
	if v.Error != nil {
		c.listCertificates(w, r, v, d, v.Error.Status)
		return
	}
	seeOther(w, r, "/certificates/"+esc(d.Upload.Name), "uploaded")
}

func (c *Console) showCertificate(w http.ResponseWriter, r *http.Request, v *view, name, code string, status int) {
	d := &certificateData{Code: code}
	if _, err := c.call(r, v.Session, http.MethodGet, "/certificates/"+esc(name), nil, nil, &d.Cert); err != nil {
		if v.Error == nil {
			v.Error = asAPIError(err)
		}
		c.render(w, v.Error.Status, "error", v)
		return
	}
	v.Title = "CA certificate " + d.Cert.Name
	c.render(w, status, "certificate", withData(v, d))
}

func (c *Console) certificateAction(w http.ResponseWriter, r *http.Request, v *view, name, action string) {
	path := "/certificates/" + esc(name)
	switch action {
	case "code":
		var resp dps.CertificateResponse
		if _, err := c.call(r, v.Session, http.MethodPost, path+"/generateVerificationCode", nil, nil, &resp); err != nil {
			v.Error = asAPIError(err)
			c.showCertificate(w, r, v, name, "", v.Error.Status)
			return
		}
		c.showCertificate(w, r, v, name, resp.Properties.VerificationCode, http.StatusOK)
	case "verify":
		pem, err := formText(r, "certificate", "certificateFile")
		if err != nil {
			c.fail(w, r, v.Session, http.StatusBadRequest, "%v", err)
			return
		}
		if _, err := c.call(r, v.Session, http.MethodPost, path+"/verify", nil, dps.VerificationCodeRequest{Certificate: pem}, nil); err != nil {
			v.Error = asAPIError(err)
			c.showCertificate(w, r, v, name, "", v.Error.Status)
			return
		}
		seeOther(w, r, "/certificates/"+esc(name), "verified")
	case "delete":
		h := http.Header{"If-Match": {r.PostFormValue("etag")}}
		if _, err := c.call(r, v.Session, http.MethodDelete, path, h, nil, nil); err != nil {
			v.Error = asAPIError(err)
			c.showCertificate(w, r, v, name, "", v.Error.Status)
			return
		}
		seeOther(w, r, "/certificates", "deleted")
	default:
		c.fail(w, r, v.Session, http.StatusNotFound, "no action %q", action)
	}
}
