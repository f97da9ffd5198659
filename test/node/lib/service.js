// Shared plumbing for the scripts that drive the official Azure IoT
// provisioning service SDK against dpsd. The Go end-to-end tests
// (test/e2e) run the scripts and assert on what they print.
'use strict';

const https = require('https');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { env } = require('./device');

// The SDK hands "HostName" from the connection string to https.request as a
// host name, so "localhost:8443" fails with ENOTFOUND. This agent splits the
// port off before connecting. The Host header, SNI and the token's sr keep
// the host:port the SDK chose. With DPS_NO_AGENT=1 the SDK is used as it
// ships (the server must then listen on 443).
class HostPortAgent extends https.Agent {
  createConnection(options, callback) {
    const o = Object.assign({}, options);
    const m = /^(.*):(\d+)$/.exec(o.host || '');
    if (m) {
      o.host = m[1];
      o.port = Number(m[2]);
      o.servername = m[1];
    }
    return super.createConnection(o, callback);
  }
}

function client() {
  const c = ProvisioningServiceClient.fromConnectionString(env('DPS_CONNECTION_STRING'));
  if (process.env.DPS_NO_AGENT !== '1') {
    // setOptions is the SDK's own (private) hook; it replaces all options.
    c._restApiClient.setOptions({ http: { agent: new HostPortAgent({ keepAlive: false }) } });
  }
  return c;
}

// call invokes a callback-style SDK method and resolves with
// {result, status, headers}; it rejects with the SDK's error. Callbacks
// rather than promises: runBulkEnrollmentOperation's promise form never
// settles in 1.11.2.
function call(c, method, ...args) {
  return new Promise((resolve, reject) => {
    c[method](...args, (err, result, response) => {
      if (err) {
        reject(err);
        return;
      }
      resolve({
        result: result === undefined ? null : result,
        status: response ? response.statusCode : null,
        headers: response ? response.headers : null,
      });
    });
  });
}

// describeError keeps what a caller of the SDK can see of a failure.
function describeError(err) {
  return {
    name: err.name || (err.constructor && err.constructor.name) || 'Error',
    message: err.message,
    statusCode: err.response ? err.response.statusCode : null,
    body: err.responseBody || null,
  };
}

// Recorder collects the steps of a scenario. A step that the SDK answers
// with an error is recorded (the Go test decides whether that error was
// expected); only a failure of the script itself exits non-zero.
class Recorder {
  constructor() {
    this.steps = [];
  }

  async step(name, fn) {
    try {
      const r = await fn();
      this.steps.push({ step: name, ok: true, status: r && r.status !== undefined ? r.status : null, result: r && r.result !== undefined ? r.result : r, headers: pickHeaders(r) });
      return r;
    } catch (err) {
      if (!err || !err.response) {
        // Not an answer from the server: a bug in the script or the
        // transport. Say so loudly.
        throw err;
      }
      this.steps.push({ step: name, ok: false, error: describeError(err) });
      return null;
    }
  }

  print() {
    process.stdout.write(JSON.stringify({ steps: this.steps }, null, 2) + '\n');
  }
}

function pickHeaders(r) {
  if (!r || !r.headers) {
    return null;
  }
  const out = {};
  for (const h of ['x-ms-continuation', 'x-ms-item-type', 'x-ms-request-id', 'content-type']) {
    if (r.headers[h] !== undefined) {
      out[h] = r.headers[h];
    }
  }
  return out;
}

// main runs scenario and prints the recorded steps; an unexpected error
// exits 1 with its stack on stderr.
function main(scenarios) {
  const name = process.argv[2] || process.env.DPS_SCENARIO;
  const scenario = scenarios[name];
  if (!scenario) {
    process.stderr.write(`unknown scenario ${JSON.stringify(name)}; scenarios: ${Object.keys(scenarios).join(', ')}\n`);
    process.exit(2);
  }
  const rec = new Recorder();
  scenario(client(), rec).then(
    () => {
      rec.print();
      process.exit(0);
    },
    (err) => {
      rec.print();
      process.stderr.write(`scenario ${name} failed: ${err && err.stack ? err.stack : err}\n`);
      if (err && err.response) {
        process.stderr.write(`HTTP ${err.response.statusCode}: ${err.responseBody}\n`);
      }
      process.exit(1);
    },
  );
}

module.exports = { client, call, describeError, Recorder, main, HostPortAgent };
