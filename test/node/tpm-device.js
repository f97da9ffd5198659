// Registers one TPM device over HTTPS with the official Azure IoT Node.js
// SDK, as shipped: azure-iot-provisioning-device (TpmRegistration, chosen by
// ProvisioningDeviceClient.create for a TPM security client) with the -http
// transport, and azure-iot-security-tpm's TpmSecurityClient on a TPM
// simulator (tss.js `new Tpm(true, host, port)`: the Microsoft simulator TCP
// protocol, platform port = port + 1).
//
//   NODE_EXTRA_CA_CERTS=server-ca.pem DPS_PROVISIONING_HOST=localhost DPS_ID_SCOPE=0ne... \
//   DPS_TPM=127.0.0.1:2321 node tpm-device.js
//
// Environment: DPS_PROVISIONING_HOST (port 443 only: the HTTP transport hands
// "host:port" to Node as a host name), DPS_ID_SCOPE, DPS_TPM (default
// 127.0.0.1:2321), DPS_REGISTRATION_ID (optional; default: derived from the
// EK by the security client), DPS_SIGN (optional text: after the
// registration, the TPM signs it with the imported hub key).
//
// Output: {"tpm": {endorsementKey, storageRootKey, registrationId} (base64,
// as the security client read them), "ok", "result" | "error", "signature"
// (base64 HMAC of DPS_SIGN), "requests": [{method, path, status,
// authorization: "SharedAccessSignature" | null, ...}]}. Exits non-zero only when
// the script itself fails.
'use strict';

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { TpmSecurityClient } = require('azure-iot-security-tpm');
const { Tpm } = require('tss.js');
const { env, tapHttpsRequests, describeError } = require('./lib/device');

const requests = tapHttpsRequests();

// call turns a security client method with a node-style callback into a promise.
function call(obj, method, ...args) {
  return new Promise((resolve, reject) => obj[method](...args, (err, v) => (err ? reject(err) : resolve(v))));
}

async function main() {
  const host = env('DPS_PROVISIONING_HOST');
  const idScope = env('DPS_ID_SCOPE');
  const [tpmHost, tpmPort] = (process.env.DPS_TPM || '127.0.0.1:2321').split(':');
  const security = new TpmSecurityClient(process.env.DPS_REGISTRATION_ID || undefined, new Tpm(true, tpmHost, Number(tpmPort)));
  const out = { tpm: {}, ok: false, requests };
  out.tpm.endorsementKey = (await call(security, 'getEndorsementKey')).toString('base64');
  out.tpm.storageRootKey = (await call(security, 'getStorageRootKey')).toString('base64');
  out.tpm.registrationId = await call(security, 'getRegistrationId');
  const client = ProvisioningDeviceClient.create(host, idScope, new Http(), security);
  try {
    out.result = await client.register();
    out.ok = true;
    if (process.env.DPS_SIGN) {
      out.signature = (await call(security, 'signWithIdentity', Buffer.from(process.env.DPS_SIGN))).toString('base64');
    }
  } catch (err) {
    out.error = describeError(err);
  }
  // Exit at once: the TPM socket and keep-alive sockets would hold the process.
  process.stdout.write(JSON.stringify(out, null, 2) + '\n', () => process.exit(0));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
