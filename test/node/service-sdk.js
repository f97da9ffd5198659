// Drives the official azure-iot-provisioning-service SDK against a dpsd
// server and prints, as JSON, every step and what the SDK returned:
//
//   DPS_CONNECTION_STRING=... NODE_EXTRA_CA_CERTS=server-ca.pem node service-sdk.js SCENARIO
//
// The Go test test/e2e/service_sdk_test.go runs each scenario against the
// real dpsd binary and asserts on the output. Certificates for the X.509
// scenarios come in DPS_DEVICE_CERT (a device certificate, PEM) and
// DPS_SIGNING_CERT (a CA certificate, PEM).
'use strict';

const { call, main } = require('./lib/service');
const { env } = require('./lib/device');

// A TPM endorsement key as the Azure samples give it (base64).
const endorsementKey = 'AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjb/do3/dD6l4sGBwFCnKRdln4XpM03zLpoHFao8zOwt8l/uP3qUIxmCYv9A7m69Ms+5/pCkTu/rK4mRDsfhZ0QLfbzVI6zQFOKF/rwsfBtFeWlWtcuJMKlXdD8TXWElTzgh7JS4qhFzreL0c1mI0GCj+Aws0usZh7dLIVPnlgZcBhgy1SSDQMQ==';

const clone = (o) => JSON.parse(JSON.stringify(o));

// The service SDK's methods for each kind of enrollment, and how the
// lifecycle changes one: the update, and the stale update that must fail.
const individualKind = {
  idField: 'registrationId',
  put: 'createOrUpdateIndividualEnrollment',
  get: 'getIndividualEnrollment',
  mechanism: 'getIndividualEnrollmentAttestationMechanism',
  del: 'deleteIndividualEnrollment',
  update: { initialTwin: { tags: { site: 'e2e' }, properties: { desired: { interval: 5 } } } },
  stale: { provisioningStatus: 'enabled' },
  // Steps the group lifecycle leaves out.
  getAfterUpdate: true,
  deleteDeleted: true,
};
const groupKind = {
  idField: 'enrollmentGroupId',
  put: 'createOrUpdateEnrollmentGroup',
  get: 'getEnrollmentGroup',
  mechanism: 'getEnrollmentGroupAttestationMechanism',
  del: 'deleteEnrollmentGroup',
  update: { reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false } },
  stale: {},
};

// lifecycle runs the life of one enrollment of kind k: create, get,
// attestation mechanism, update with the etag the SDK carries, a stale
// update (InvalidEtagError), a create of an existing ID, a delete with a
// stale etag, a delete by object (its etag), a get of the deleted record.
function lifecycle(k, id, attestation) {
  return async (c, rec) => {
    const created = await rec.step('create', () => call(c, k.put, { [k.idField]: id, attestation }));
    const got = await rec.step('get', () => call(c, k.get, id));
    await rec.step('attestationMechanism', () => call(c, k.mechanism, id));
    if (!created || !got) {
      return;
    }
    const changed = Object.assign(clone(got.result), { provisioningStatus: 'disabled' }, k.update);
    const updated = await rec.step('update', () => call(c, k.put, changed));
    await rec.step('updateStale', () => call(c, k.put, Object.assign(clone(got.result), k.stale)));
    await rec.step('createExisting', () => call(c, k.put, { [k.idField]: id, attestation }));
    if (k.getAfterUpdate) {
      await rec.step('getAfterUpdate', () => call(c, k.get, id));
    }
    await rec.step('deleteStale', () => call(c, k.del, id, got.result.etag));
    if (updated) {
      await rec.step('delete', () => call(c, k.del, updated.result));
    }
    await rec.step('getDeleted', () => call(c, k.get, id));
    if (k.deleteDeleted) {
      await rec.step('deleteDeleted', () => call(c, k.del, id));
    }
  };
}

const individual = (id, attestation) => lifecycle(individualKind, id, attestation);
const group = (id, attestation) => lifecycle(groupKind, id, attestation);

// drain pages through a query the way the SDK needs: next() must be given
// the continuation token (1.11.2 ignores the stored one otherwise).
async function drain(rec, name, q) {
  const pages = [];
  for (let i = 0; q.hasMoreResults; i++) {
    if (i > 50) {
      throw new Error(`${name}: more than 50 pages; the server keeps sending x-ms-continuation`);
    }
    const r = await rec.step(`${name}[${i}]`, () => q.next(q.continuationToken));
    if (!r) {
      break;
    }
    pages.push(r.result);
  }
  return pages;
}

// next adapts Query.next to call()'s shape.
function pageOf(q) {
  return {
    hasMoreResults: true,
    continuationToken: null,
    next(token) {
      return new Promise((resolve, reject) => {
        q.next(token, (err, result, response) => {
          this.hasMoreResults = q.hasMoreResults;
          this.continuationToken = q.continuationToken;
          if (err) {
            reject(err);
            return;
          }
          resolve({ result, status: response.statusCode, headers: response.headers });
        });
      });
    },
  };
}

const scenarios = {
  'individual-symmetrickey': individual('node-sym-1', { type: 'symmetricKey' }),
  'individual-symmetrickey-supplied': individual('node-sym-2', {
    type: 'symmetricKey',
    symmetricKey: { primaryKey: 'bm9kZS1wcmltYXJ5LWtleS0wMTIzNDU2Nzg5YWJjZGVm', secondaryKey: 'bm9kZS1zZWNvbmRhcnkta2V5LTAxMjM0NTY3ODlhYmNkZWY=' },
  }),
  'individual-x509': (c, rec) => individual('node-x509-1', {
    type: 'x509',
    x509: { clientCertificates: { primary: { certificate: env('DPS_DEVICE_CERT') } } },
  })(c, rec),
  'individual-tpm': individual('node-tpm-1', { type: 'tpm', tpm: { endorsementKey } }),

  'group-symmetrickey': group('node-grp-sym', { type: 'symmetricKey' }),
  'group-x509': (c, rec) => group('node-grp-x509', {
    type: 'x509',
    // As in the Azure e2e tests: PEM text for the primary, base64 of the
    // PEM text for the secondary.
    x509: {
      signingCertificates: {
        primary: { certificate: env('DPS_SIGNING_CERT') },
        secondary: { certificate: Buffer.from(env('DPS_SIGNING_CERT')).toString('base64') },
      },
    },
  })(c, rec),
  'group-tpm': async (c, rec) => {
    await rec.step('create', () => call(c, 'createOrUpdateEnrollmentGroup', { enrollmentGroupId: 'node-grp-tpm', attestation: { type: 'tpm', tpm: { endorsementKey } } }));
    await rec.step('get', () => call(c, 'getEnrollmentGroup', 'node-grp-tpm'));
  },

  query: async (c, rec) => {
    for (let i = 0; i < 7; i++) {
      await rec.step(`create q-${i}`, () => call(c, 'createOrUpdateIndividualEnrollment', {
        registrationId: `q-${i}`,
        attestation: i % 2 ? { type: 'symmetricKey' } : { type: 'tpm', tpm: { endorsementKey } },
      }));
    }
    for (let i = 0; i < 3; i++) {
      await rec.step(`create qg-${i}`, () => call(c, 'createOrUpdateEnrollmentGroup', { enrollmentGroupId: `qg-${i}`, attestation: { type: 'symmetricKey' } }));
    }
    await drain(rec, 'enrollments', pageOf(c.createIndividualEnrollmentQuery({ query: '*' }, 3)));
    await drain(rec, 'enrollmentsAll', pageOf(c.createIndividualEnrollmentQuery({ query: 'SELECT * FROM enrollments' })));
    await drain(rec, 'groups', pageOf(c.createEnrollmentGroupQuery({ query: '*' }, 2)));
  },

  bulk: async (c, rec) => {
    const sym = { type: 'symmetricKey' };
    await rec.step('create', () => call(c, 'runBulkEnrollmentOperation', {
      mode: 'create',
      enrollments: [
        { registrationId: 'bulk-1', attestation: sym },
        { registrationId: 'bulk-2', attestation: { type: 'tpm', tpm: { endorsementKey } } },
        { registrationId: 'bulk.bad.', attestation: sym },
      ],
    }));
    await rec.step('createAgain', () => call(c, 'runBulkEnrollmentOperation', {
      mode: 'create',
      enrollments: [{ registrationId: 'bulk-1', attestation: sym }, { registrationId: 'bulk-3', attestation: sym }],
    }));
    await rec.step('update', () => call(c, 'runBulkEnrollmentOperation', {
      mode: 'update',
      enrollments: [{ registrationId: 'bulk-1', attestation: sym, provisioningStatus: 'disabled' }],
    }));
    const b1 = await rec.step('get bulk-1', () => call(c, 'getIndividualEnrollment', 'bulk-1'));
    const b2 = await rec.step('get bulk-2', () => call(c, 'getIndividualEnrollment', 'bulk-2'));
    if (!b1 || !b2) {
      return;
    }
    await rec.step('updateIfMatchEtag', () => call(c, 'runBulkEnrollmentOperation', {
      mode: 'updateIfMatchEtag',
      enrollments: [
        Object.assign(clone(b1.result), { provisioningStatus: 'enabled' }),
        Object.assign(clone(b2.result), { etag: b1.result.etag }),
      ],
    }));
    await rec.step('get bulk-1 after', () => call(c, 'getIndividualEnrollment', 'bulk-1'));
    await rec.step('delete', () => call(c, 'runBulkEnrollmentOperation', {
      mode: 'delete',
      enrollments: [{ registrationId: 'bulk-1' }, { registrationId: 'bulk-2' }, { registrationId: 'bulk-3' }, { registrationId: 'bulk-missing' }],
    }));
    await drain(rec, 'left', pageOf(c.createIndividualEnrollmentQuery({ query: '*' })));
  },

  registrations: async (c, rec) => {
    await rec.step('get missing', () => call(c, 'getDeviceRegistrationState', 'nobody'));
    await rec.step('delete missing', () => call(c, 'deleteDeviceRegistrationState', 'nobody'));
    await rec.step('delete missing with etag', () => call(c, 'deleteDeviceRegistrationState', 'nobody', 'IjEyMyI='));
    await rec.step('create group', () => call(c, 'createOrUpdateEnrollmentGroup', { enrollmentGroupId: 'reg-grp', attestation: { type: 'symmetricKey' } }));
    await drain(rec, 'query', pageOf(c.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, 'reg-grp', 5)));
  },

  // smoke is the short round trip run with the SDK as it ships, on port 443.
  smoke: async (c, rec) => {
    await rec.step('create', () => call(c, 'createOrUpdateIndividualEnrollment', { registrationId: 'smoke-1', attestation: { type: 'symmetricKey' } }));
    await rec.step('get', () => call(c, 'getIndividualEnrollment', 'smoke-1'));
    await rec.step('delete', () => call(c, 'deleteIndividualEnrollment', 'smoke-1'));
  },
};

main(scenarios);
