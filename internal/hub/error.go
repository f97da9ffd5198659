package hub

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/dpsd/dpsd/internal/outbound"
)

// MaxAnswerLength bounds the hub's answer an Error quotes.
const MaxAnswerLength = 512

// Error is a registry call that failed after its retries.
type Error struct {
	Hub      string // the linked hub's name
	Registry Kind
	URL      string // webhook: the redacted URL
	Op       string // e.g. "create device", "merge twin", "deviceAssigned event"
	DeviceID string
	// Status is the last HTTP status; 0 when no answer came.
	Status int
	// Answer is the last answer's body, truncated to MaxAnswerLength, with
	// every key dpsd sent replaced by ****.
	Answer   string
	Attempts int
	// Err is why no answer came (an *outbound.Error), when Status is 0.
	Err error
}

func (e *Error) Error() string {
	who := "IoT hub " + e.Hub
	if e.Registry == KindWebhook {
		who = fmt.Sprintf("registry webhook %s of hub %s", e.URL, e.Hub)
	}
	what := fmt.Sprintf("%s of device %q", e.Op, e.DeviceID)
	tries := ""
	if e.Attempts > 1 {
		tries = fmt.Sprintf(" (%d attempts)", e.Attempts)
	}
	if e.Status == 0 {
		return fmt.Sprintf("%s did not answer %s: %v%s", who, what, e.Err, tries)
	}
	answer := e.Answer
	if answer == "" {
		answer = "(empty body)"
	}
	if e.Err != nil {
		return fmt.Sprintf("%s answered %s with what dpsd cannot use (%v): %s", who, what, e.Err, answer)
	}
	if e.Unauthorized() {
		return fmt.Sprintf("%s refused dpsd's credentials for %s: %d %s: %s%s", who, what, e.Status, http.StatusText(e.Status), answer, tries)
	}
	return fmt.Sprintf("%s answered %d %s to %s: %s%s", who, e.Status, http.StatusText(e.Status), what, answer, tries)
}

func (e *Error) Unwrap() error { return e.Err }

// Unauthorized reports whether the hub refused dpsd's credentials (401 or
// 403): its connection string's key, or the webhook receiver's secret.
func (e *Error) Unauthorized() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// Timeout reports whether the last attempt timed out.
func (e *Error) Timeout() bool {
	oe := outbound.AsError(e.Err)
	return oe != nil && oe.Timeout()
}

// quoteAnswer prepares a hub's answer for an error message: secrets dpsd
// sent (which a hub may echo) are masked, and the text is cut to
// MaxAnswerLength.
func quoteAnswer(body []byte, secrets []string) string {
	s := string(body)
	for _, k := range secrets {
		if len(k) >= 8 { // shorter strings are not keys, and would mask noise
			s = strings.ReplaceAll(s, k, "****")
		}
	}
	return outbound.Excerpt([]byte(s), MaxAnswerLength)
}
