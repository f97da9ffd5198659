// Registers devices with the official Azure IoT Node.js device SDK over its
// MQTT transports (azure-iot-provisioning-device-mqtt 1.8.1: Mqtt on
// mqtts://HOST, MqttWs on wss://HOST:443/$iothub/websocket), unmodified.
//
// Environment:
//   DPS_PROVISIONING_HOST  host[:port] (Mqtt accepts a port; MqttWs always dials 443)
//   DPS_ID_SCOPE           the ID scope
//   NODE_EXTRA_CA_CERTS    the server CA
//   DPS_DEVICES            JSON array of devices, each
//                          {"id", "transport": "mqtt"|"mqtt-ws",
//                           "cert": PEM file (leaf first, then its chain), "key": PEM file,
//                           or "symmetricKey": base64 device key,
//                           "payload": optional JSON}
//
// Prints {"devices": [{"id", "transport", "ok", "result" | "error", "ms"}]}:
// the registration result, or the SDK's error (name, message, result = the
// error body the service sent). Exits non-zero only when the script fails.
'use strict';

const fs = require('fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { X509Security } = require('azure-iot-security-x509');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const host = process.env.DPS_PROVISIONING_HOST;
const idScope = process.env.DPS_ID_SCOPE;
const devices = JSON.parse(process.env.DPS_DEVICES || '[]');
// The SDK polls for ever while the status is "assigning": bound each device.
const deviceTimeoutMs = 60000;

function register(d) {
  return new Promise((resolve) => {
    let security;
    if (d.symmetricKey) {
      security = new SymmetricKeySecurityClient(d.id, d.symmetricKey);
    } else {
      security = new X509Security(d.id, {
        cert: fs.readFileSync(d.cert, 'utf8'),
        key: fs.readFileSync(d.key, 'utf8'),
      });
    }
    const transport = d.transport === 'mqtt-ws' ? new MqttWs() : new Mqtt();
    const client = ProvisioningDeviceClient.create(host, idScope, transport, security);
    if (d.payload !== undefined) {
      client.setProvisioningPayload(d.payload);
    }
    const start = Date.now();
    let done = false;
    const finish = (out) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      out.ms = Date.now() - start;
      resolve(out);
    };
    const timer = setTimeout(() => {
      client.cancel(() => {});
      finish({ id: d.id, transport: d.transport, ok: false, error: { name: 'Timeout', message: `no result within ${deviceTimeoutMs} ms` } });
    }, deviceTimeoutMs);
    client.register((err, result) => {
      if (err) {
        finish({
          id: d.id, transport: d.transport, ok: false,
          error: { name: err.name || err.constructor.name, message: err.message, result: err.result === undefined ? null : err.result },
        });
        return;
      }
      finish({ id: d.id, transport: d.transport, ok: true, result });
    });
  });
}

(async () => {
  const out = [];
  for (const d of devices) {
    out.push(await register(d));
  }
  process.stdout.write(JSON.stringify({ devices: out }) + '\n');
  // mqtt.js may keep a socket open after a refusal; do not wait for it.
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
