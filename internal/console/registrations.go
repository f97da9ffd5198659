package console

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/dpsd/dpsd/internal/dps"
)

type registrationsData struct {
	ID, Group string
	Items     []dps.DeviceRegistrationState
	Next      template.URL // the next page
}

type registrationData struct {
	Reg dps.DeviceRegistrationState
}

func (c *Console) registrations(w http.ResponseWriter, r *http.Request, s *session, segs []string) {
	v := &view{Title: "Registration records", Nav: "registrations", Session: s, Notice: notice(r)}
	switch {
	case len(segs) == 0:
		c.listRegistrations(w, r, v)
	case len(segs) == 1 && r.Method != http.MethodPost:
		c.showRegistration(w, r, v, segs[0], http.StatusOK)
	case len(segs) == 2 && segs[1] == "delete" && r.Method == http.MethodPost:
		h := http.Header{"If-Match": {r.PostFormValue("etag")}}
		if _, err := c.call(r, s, http.MethodDelete, "/registrations/"+esc(segs[0]), h, nil, nil); err != nil {
			v.Error = asAPIError(err)
			c.showRegistration(w, r, v, segs[0], v.Error.Status)
			return
		}
		seeOther(w, r, "/registrations", "deleted")
	default:
		c.fail(w, r, s, http.StatusNotFound, "no console page at %s", r.URL.Path)
	}
}

// listRegistrations looks a record up by registration ID, or lists the
// records of a group.
func (c *Console) listRegistrations(w http.ResponseWriter, r *http.Request, v *view) {
	q := r.URL.Query()
	d := &registrationsData{ID: strings.TrimSpace(q.Get("id")), Group: strings.TrimSpace(q.Get("group"))}
	v.Data = d
	if d.ID != "" {
		http.Redirect(w, r, Prefix+"/registrations/"+esc(d.ID), http.StatusSeeOther)
		return
	}
	if d.Group != "" {
		h := http.Header{"X-Ms-Max-Item-Count": {fmt.Sprint(listPageSize)}}
		if n := q.Get("next"); n != "" {
			h.Set("X-Ms-Continuation", n)
		}
		hdr, err := c.call(r, v.Session, http.MethodPost, "/registrations/"+esc(d.Group)+"/query", h, nil, &d.Items)
		if err != nil {
			v.Error = asAPIError(err)
			c.render(w, v.Error.Status, "registrations", v)
			return
		}
		if next := hdr.Get("x-ms-continuation"); next != "" {
			d.Next = template.URL(Prefix + "/registrations?" + url.Values{"group": {d.Group}, "next": {next}}.Encode()) // escaped by Encode
		}
	}
	c.render(w, http.StatusOK, "registrations", v)
}

func (c *Console) showRegistration(w http.ResponseWriter, r *http.Request, v *view, id string, status int) {
	d := &registrationData{}
	if _, err := c.call(r, v.Session, http.MethodGet, "/registrations/"+esc(id), nil, nil, &d.Reg); err != nil {
		if v.Error == nil {
			v.Error = asAPIError(err)
		}
		v.Data = &registrationsData{ID: id}
		c.render(w, v.Error.Status, "registrations", v)
		return
	}
	v.Title = "Registration record " + d.Reg.RegistrationID
	c.render(w, status, "registration", withData(v, d))
}
