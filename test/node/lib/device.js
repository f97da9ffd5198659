// Shared plumbing for the scripts that drive the official Azure IoT Node.js
// SDKs against a provisioning service: environment, a record of the HTTPS
// requests the SDK makes, and errors as the Go tests read them.
'use strict';

const https = require('https');

function env(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set`);
  }
  return v;
}

// tapHttpsRequests records every HTTPS request made from now on (the SDKs
// look https.request up at call time, in azure-iot-http-base) without
// changing it: {method, path, host, status, retryAfter, authorization (the
// scheme of the Authorization header, or null)}. It returns the live list.
function tapHttpsRequests() {
  const requests = [];
  const request = https.request;
  https.request = function tapped(...args) {
    const req = request.apply(this, args);
    const opts = args[0] && typeof args[0] === 'object' && !(args[0] instanceof URL) ? args[0] : {};
    const auth = opts.headers && opts.headers.Authorization;
    const rec = {
      method: opts.method || req.method, path: opts.path || req.path, host: opts.host || null,
      status: null, retryAfter: null, authorization: auth ? String(auth).split(' ')[0] : null,
    };
    requests.push(rec);
    req.on('response', (res) => {
      rec.status = res.statusCode;
      rec.retryAfter = res.headers['retry-after'] || null;
    });
    return req;
  };
  return requests;
}

// describeError keeps what a caller of the device SDK can see of a failure.
function describeError(err) {
  if (!err) {
    return null;
  }
  const res = err.response || err.transportObject;
  return {
    name: err.name || (err.constructor && err.constructor.name) || 'Error',
    message: String(err.message),
    statusCode: res && res.statusCode ? res.statusCode : null,
    body: err.responseBody !== undefined ? String(err.responseBody) : (err.result !== undefined ? JSON.stringify(err.result) : null),
  };
}

module.exports = { env, tapHttpsRequests, describeError };
