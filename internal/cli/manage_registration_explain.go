package cli

// dpsd registration explain: what became of one device, in words: its
// registration record and its latest refusals in the journal.

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/dpsd/dpsd/internal/dps"
	"github.com/dpsd/dpsd/internal/svcclient"
)

// refusalsPath is the service API's refusal journal.
const refusalsPath = "/refusals"

// explanation is what explain prints with --output json.
type explanation struct {
	RegistrationID string                       `json:"registrationId"`
	Registration   *dps.DeviceRegistrationState `json:"registration"` // null: no record
	Refusals       []dps.Refusal                `json:"refusals"`     // newest first
}

func registrationExplainCmd(e *env, cf *connFlags) *cobra.Command {
	o := &regOpts{}
	top := 0
	c := verb(e, cf, &cobra.Command{
		Use:   "explain REGISTRATION_ID",
		Short: "Explain what became of a device: its registration record and its latest refusals",
		Long: `Say in words what became of a device's registrations: its registration record
(assigned to which hub, or why it failed) and its latest refusals in the
refusal journal, newest first, each with the reason, what the device
presented and where it came from. Needs a policy with RegistrationStatusRead
and EnrollmentRead.`,
		Annotations: map[string]string{annArgs: "REGISTRATION_ID"},
	}, &o.output, func(s *session, f flags) error {
		switch a := f.arg(); {
		case a != "" && o.id != "" && a != o.id:
			return usageError{fmt.Errorf("the registration ID is given twice, as %q and --registration-id %q", a, o.id)}
		case a != "":
			o.id = a
		case o.id == "":
			return usageError{errors.New("give the registration ID: dpsd registration explain REGISTRATION_ID")}
		}
		if top < 1 || top > 1000 {
			return withHint(fmt.Errorf("--top %d is outside 1 to 1000", top), "omit --top for the latest 10 refusals")
		}
		ex := explanation{RegistrationID: o.id, Refusals: []dps.Refusal{}}
		cl, err := s.client()
		if err != nil {
			return err
		}
		// No record is an answer here, not a failure.
		_, err = cl.Do(s.ctx, svcclient.Request{Method: http.MethodGet, Path: o.target().path("")}, &ex.Registration)
		var se *svcclient.Error
		switch {
		case errors.As(err, &se) && se.Status == http.StatusNotFound:
			ex.Registration = nil
		case err != nil:
			return apiError(err, cl, o.target())
		}
		q := url.Values{"registrationId": {o.id}}
		h := http.Header{"X-Ms-Max-Item-Count": {strconv.Itoa(top)}}
		if _, err := s.do(o.target(), svcclient.Request{Method: http.MethodGet, Path: refusalsPath + "?" + q.Encode(), Header: h}, &ex.Refusals); err != nil {
			return err
		}
		if o.output == outputJSON {
			return writeJSON(s.stdout, ex)
		}
		return writeExplanation(s.stdout, &ex, top)
	})
	f := flagsOf(c)
	f.str(&o.id, "registration-id", "", "the device's registration ID (or give it as the argument)", "rid")
	f.fs.IntVar(&top, "top", 10, "how many of the latest refusals to show")
	return c
}

// writeExplanation tells the story of ex in words.
func writeExplanation(w io.Writer, ex *explanation, top int) error {
	var b strings.Builder
	r := ex.Registration
	switch {
	case r == nil:
		fmt.Fprintf(&b, "%s has no registration record: it has never registered successfully, or its record was deleted.\n", ex.RegistrationID)
	case r.Status == dps.StatusAssigned:
		fmt.Fprintf(&b, "%s is assigned to %s as device %s (%s), last registered %s.\n", r.RegistrationID, r.AssignedHub, r.DeviceID, r.Substatus, timeOf(r.LastUpdatedDateTimeUtc))
	default:
		fmt.Fprintf(&b, "%s last registered %s with status %s", r.RegistrationID, timeOf(r.LastUpdatedDateTimeUtc), r.Status)
		if r.ErrorCode != 0 || r.ErrorMessage != "" {
			fmt.Fprintf(&b, ": error %d, %s", r.ErrorCode, r.ErrorMessage)
		}
		b.WriteString(".\n")
	}
	if len(ex.Refusals) == 0 {
		fmt.Fprintf(&b, "The refusal journal holds no refusal of %s.\n", ex.RegistrationID)
		_, err := io.WriteString(w, b.String())
		return err
	}
	if r != nil && r.LastUpdatedDateTimeUtc != nil {
		since := 0
		for _, e := range ex.Refusals {
			if e.Time != nil && e.Time.After(r.LastUpdatedDateTimeUtc.Time) {
				since++
			}
		}
		switch {
		case since == 0:
			fmt.Fprintf(&b, "It was not refused since.\n")
		case since == len(ex.Refusals) && since == top:
			fmt.Fprintf(&b, "It was refused at least %d times since.\n", since)
		case since == 1:
			fmt.Fprintf(&b, "It was refused once since.\n")
		default:
			fmt.Fprintf(&b, "It was refused %d times since.\n", since)
		}
	}
	fmt.Fprintf(&b, "\nLatest refusals, newest first:\n")
	for _, e := range ex.Refusals {
		fmt.Fprintf(&b, "\n%s  %s over %s from %s: %s %d\n", timeOf(e.Time), opWords(e.Operation), e.Transport, dash(e.PeerAddress), outcomeWords(e.Status), e.ErrorCode)
		fmt.Fprintf(&b, "  reason:     %s\n", e.Reason)
		fmt.Fprintf(&b, "  presented:  %s\n", e.Credential)
		fmt.Fprintf(&b, "  trackingId: %s\n", e.TrackingID)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func opWords(op string) string {
	switch op {
	case "register":
		return "register"
	case "poll":
		return "operation status poll"
	case "lookup":
		return "registration status lookup"
	}
	return op
}

// outcomeWords names a journal entry's outcome: a refusal, or the disabled
// outcome of a register.
func outcomeWords(status int) string {
	if status < 300 {
		return "answered with status disabled, errorCode"
	}
	return fmt.Sprintf("refused, HTTP %d, errorCode", status)
}
