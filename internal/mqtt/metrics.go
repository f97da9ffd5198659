package mqtt

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the MQTT transport's collectors, labelled by transport ("mqtt"
// for MQTT over TLS, "mqtt-ws" for MQTT over WebSocket). Registrations and
// authentication refusals are counted by the provisioning pipeline, by
// transport, like every other transport's.
type Metrics struct {
	// Connections counts network connections accepted.
	Connections *prometheus.CounterVec // transport
	// Active is the number of open connections.
	Active *prometheus.GaugeVec // transport
	// Packets counts control packets by direction (in, out) and type.
	Packets *prometheus.CounterVec // transport, direction, type
	// Requests counts register and poll requests by the status answered.
	Requests *prometheus.CounterVec // transport, request, status
	// Refusals counts connections and requests refused by the transport
	// itself, by reason (bad_username, identifier_rejected, topic_not_allowed,
	// packet_too_large, protocol_error, connect_timeout, keepalive_timeout,
	// tls_handshake, subscription_refused, ...).
	Refusals *prometheus.CounterVec // transport, reason
}

// NewMetrics creates the collectors and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_mqtt_connections_total", Help: "MQTT network connections accepted, by transport (mqtt, mqtt-ws).",
		}, []string{"transport"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dpsd_mqtt_connections_active", Help: "Open MQTT connections, by transport.",
		}, []string{"transport"}),
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_mqtt_packets_total", Help: "MQTT control packets by transport, direction (in, out) and packet type.",
		}, []string{"transport", "direction", "type"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_mqtt_requests_total", Help: "DPS requests over MQTT by transport, request (register, operationstatus) and answered status.",
		}, []string{"transport", "request", "status"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_mqtt_refusals_total", Help: "Connections and packets refused by the MQTT transport, by transport and reason.",
		}, []string{"transport", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.Active, m.Packets, m.Requests, m.Refusals)
	}
	return m
}
