package provtest

import (
	"encoding/base64"
	"net/url"
	"strconv"
	"time"

	"github.com/dpsd/dpsd/internal/sas"
)

// SRLower, SRUpper and SRRaw are the three encodings of a device's SAS
// resource that devices send (docs/protocol.md, "SAS tokens"): "/" as %2f (the C SDK's), as %2F, and
// unencoded (the Node SDK's).
func SRLower(scope, id string) string { return scope + "%2fregistrations%2f" + url.PathEscape(id) }
func SRUpper(scope, id string) string { return scope + "%2Fregistrations%2F" + url.PathEscape(id) }
func SRRaw(scope, id string) string   { return scope + "/registrations/" + id }

// Token signs sr exactly as given; skn is left out when empty.
func Token(sr string, key []byte, expiry time.Time, skn string) string {
	se := strconv.FormatInt(expiry.Unix(), 10)
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(sas.Sign(key, sr, se)))
	tok := "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se
	if skn != "" {
		tok += "&skn=" + skn
	}
	return tok
}
