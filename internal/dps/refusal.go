package dps

// Refusal is an entry of the refusal journal as the service API lists it
// (GET /refusals, a dpsd extension): a device request dpsd refused, or
// answered with the terminal status "disabled", and what the device
// presented. It holds no key, token signature or private material.
type Refusal struct {
	Time           *Time  `json:"time"`
	Transport      string `json:"transport"` // https, mqtt, mqtt-ws
	Operation      string `json:"operation"` // register, poll, lookup
	RegistrationID string `json:"registrationId"`
	// Credential summarizes what the device presented: certificate
	// subjects, issuers and thumbprints, or the SAS token's key name,
	// resource and expiry.
	Credential string `json:"credential"`
	Status     int    `json:"status"` // HTTP status (MQTT: the response topic's)
	ErrorCode  int    `json:"errorCode"`
	Reason     string `json:"reason"`
	TrackingID string `json:"trackingId"`
	// PeerAddress is the address the request came from, host:port.
	PeerAddress string `json:"peerAddress"`
}
