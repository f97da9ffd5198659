package serviceapi

import (
	"net/http"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/dpserr"
	"github.com/dpsd/dpsd/internal/httpx"
	"github.com/dpsd/dpsd/internal/store"
)

// registrationState renders a registration record for the service API,
// with the twin dpsd applied in the device's hub.
func registrationState(reg *store.Registration) *dps.DeviceRegistrationState {
	s := reg.Result.State()
	s.AppliedTwin = reg.AppliedTwin
	return s
}

var registrationRecords = dpserr.Resource{Noun: "registration record", NotFound: dpserr.CodeRegistrationNotFound,
	Missing: "registration record %q not found (the device has not registered, or its record was deleted)"}

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
		items[i] = registrationState(reg)
	}
	writePage(w, "DeviceRegistration", pr, items, page.Next)
	return nil
}
