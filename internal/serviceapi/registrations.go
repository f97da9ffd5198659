package serviceapi

import (
	"net/http"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
)

var registrationRecords = dpserr.Resource{Noun: "registration record", NotFound: dpserr.CodeRegistrationNotFound,
	Missing: "registration record %q not found (the device has not registered, or its record was deleted)"}

func (a *API) getRegistration(w http.ResponseWriter, r *http.Request, p []string) error {
	reg, err := a.Store.Registration(r.Context(), p[0])
	if err != nil {
		return dpserr.FromStore(err, registrationRecords, p[0])
	}
	httpx.WriteJSON(w, http.StatusOK, reg.Result.State())
	return nil
}

// deleteRegistration removes the record, so the device's next registration
// is an initial assignment again. It does not touch the device in its hub.
func (a *API) deleteRegistration(w http.ResponseWriter, r *http.Request, p []string) error {
	if err := a.Store.DeleteRegistration(r.Context(), p[0], httpx.IfMatch(r)); err != nil {
		return dpserr.FromStore(err, registrationRecords, p[0])
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// queryRegistrations lists the records of one enrollment group. The body
// (which C# sends anyway) is ignored.
func (a *API) queryRegistrations(w http.ResponseWriter, r *http.Request, p []string) error {
	var ignored any
	if err := httpx.DecodeJSON(r, &ignored, true); err != nil {
		return err
	}
	pr, err := readPaging(r)
	if err != nil {
		return err
	}
	page, err := a.Store.RegistrationsByGroup(r.Context(), p[0], pr.after, pr.size)
	if err != nil {
		return dpserr.FromStore(err, dpserr.NoRecord, "")
	}
	items := make([]*dps.DeviceRegistrationState, len(page.Items))
	for i, reg := range page.Items {
		items[i] = reg.Result.State()
	}
	writePage(w, "DeviceRegistration", pr, items, page.Next)
	return nil
}
