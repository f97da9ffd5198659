// Registers devices over HTTPS with the official Azure IoT Node.js device
// SDK, as shipped (azure-iot-provisioning-device + -http 1.9.1,
// azure-iot-security-x509, azure-iot-security-symmetric-key), and prints, as
// JSON, what the SDK returned for each device and the HTTP requests it made:
//
//   NODE_EXTRA_CA_CERTS=server-ca.pem DPS_ID_SCOPE=0ne... DPS_DEVICE_HOST=localhost \
//   DPS_DEVICES='[{"name":"x","registrationId":"my-x509-device","cert":"device-cert.pem","key":"device-key.pem","passphrase":"1234"}]' \
//   node device-sdk.js
//
// DPS_DEVICES is a JSON array; each device has a name, a registrationId and
// either cert + key (PEM files; cert may hold the full chain, leaf first)
// with an optional passphrase, or symmetricKey (base64: the enrollment's key
// or a key derived from a group key). The devices register concurrently,
// each with its own ProvisioningDeviceClient. The SDK's HTTP transport only
// reaches port 443 (it hands "host:port" to Node as a host name), so the
// server must listen there; the test test/e2e/device_node_sdk_test.go does.
//
// Output: {"devices": [{name, ok, elapsedMs, result, error, requests}]}
// where error is {name, message, statusCode, body} and requests lists the
// HTTP requests of the device ({method, path, status, retryAfter}),
// observed by wrapping https.request without changing it.
'use strict';

const fs = require('fs');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { X509Security } = require('azure-iot-security-x509');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { env, tapHttpsRequests, describeError } = require('./lib/device');

const requests = tapHttpsRequests();

function register(host, idScope, d) {
  let security;
  if (d.cert) {
    const cert = { cert: fs.readFileSync(d.cert, 'utf8'), key: fs.readFileSync(d.key, 'utf8') };
    if (d.passphrase) {
      cert.passphrase = d.passphrase;
    }
    security = new X509Security(d.registrationId, cert);
  } else {
    security = new SymmetricKeySecurityClient(d.registrationId, d.symmetricKey);
  }
  const client = ProvisioningDeviceClient.create(host, idScope, new Http(), security);
  const start = Date.now();
  return new Promise((resolve) => {
    client.register((err, result) => {
      resolve({
        name: d.name,
        registrationId: d.registrationId,
        ok: !err,
        elapsedMs: Date.now() - start,
        result: err ? null : (result === undefined ? null : result),
        error: describeError(err),
      });
    });
  });
}

async function main() {
  const host = env('DPS_DEVICE_HOST');
  const idScope = env('DPS_ID_SCOPE');
  const devices = JSON.parse(env('DPS_DEVICES'));
  const results = await Promise.all(devices.map((d) => register(host, idScope, d)));
  for (const r of results) {
    const marker = `/registrations/${r.registrationId}/`;
    r.requests = requests.filter((q) => q.path && q.path.includes(marker));
  }
  // Exit at once: keep-alive sockets of the SDK's agent would hold the
  // process for seconds.
  process.stdout.write(JSON.stringify({ devices: results }, null, 2) + '\n', () => process.exit(0));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
