-- The first schema of dpsd. Migrations are text/templates over the dialect
-- (see sqlstore.go): .Key is the type of lower-cased IDs, compared byte by
-- byte on both engines; .Blob is the type of raw bytes.
--
-- Times are Unix nanoseconds. Documents (doc) are the JSON of the dps models
-- without etag and timestamps, which live in their own columns.

CREATE TABLE instance (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    id_scope   TEXT NOT NULL,
    doc        TEXT NOT NULL,
    created    BIGINT NOT NULL
);

CREATE TABLE policies (
    key           {{.Key}} PRIMARY KEY,
    name          TEXT NOT NULL,
    primary_key   TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    rights        TEXT NOT NULL, -- JSON array
    etag          TEXT NOT NULL,
    created       BIGINT NOT NULL,
    updated       BIGINT NOT NULL
);

CREATE TABLE enrollments (
    key     {{.Key}} PRIMARY KEY, -- lower(registrationId)
    doc     TEXT NOT NULL,
    etag    TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);

CREATE TABLE enrollment_groups (
    key              {{.Key}} PRIMARY KEY, -- lower(enrollmentGroupId)
    attestation_type TEXT NOT NULL,        -- lower-cased
    doc              TEXT NOT NULL,
    etag             TEXT NOT NULL,
    created          BIGINT NOT NULL,
    updated          BIGINT NOT NULL
);
CREATE INDEX enrollment_groups_attestation_type ON enrollment_groups (attestation_type);

-- Derived from each group's signingCertificates; rewritten on every write of
-- the group and deleted with it.
CREATE TABLE group_signing_certs (
    group_key         {{.Key}} NOT NULL REFERENCES enrollment_groups (key) ON DELETE CASCADE,
    slot              TEXT NOT NULL, -- primary or secondary
    sha256_thumbprint TEXT NOT NULL, -- upper-case hex
    subject           {{.Blob}},     -- raw DER subject; NULL if the certificate did not parse
    der               {{.Blob}},
    PRIMARY KEY (group_key, slot)
);
CREATE INDEX group_signing_certs_thumbprint ON group_signing_certs (sha256_thumbprint);
CREATE INDEX group_signing_certs_subject ON group_signing_certs (subject);

-- Derived from each group's caReferences.
CREATE TABLE group_ca_refs (
    group_key {{.Key}} NOT NULL REFERENCES enrollment_groups (key) ON DELETE CASCADE,
    slot      TEXT NOT NULL,
    ca_key    {{.Key}} NOT NULL, -- lower(CA name)
    PRIMARY KEY (group_key, slot)
);
CREATE INDEX group_ca_refs_ca ON group_ca_refs (ca_key);

CREATE TABLE ca_certificates (
    key               {{.Key}} PRIMARY KEY,
    name              TEXT NOT NULL,
    der               {{.Blob}} NOT NULL,
    sha256_thumbprint TEXT NOT NULL,
    subject           {{.Blob}} NOT NULL,
    is_verified       BOOLEAN NOT NULL,
    verification_code TEXT NOT NULL,
    etag              TEXT NOT NULL,
    created           BIGINT NOT NULL,
    updated           BIGINT NOT NULL
);
CREATE INDEX ca_certificates_thumbprint ON ca_certificates (sha256_thumbprint);
CREATE INDEX ca_certificates_subject ON ca_certificates (subject);

CREATE TABLE linked_hubs (
    key                     {{.Key}} PRIMARY KEY,
    name                    TEXT NOT NULL,
    connection_string       TEXT NOT NULL,
    location                TEXT NOT NULL,
    allocation_weight       INTEGER NOT NULL,
    apply_allocation_policy BOOLEAN NOT NULL,
    etag                    TEXT NOT NULL,
    created                 BIGINT NOT NULL,
    updated                 BIGINT NOT NULL
);

CREATE TABLE registrations (
    key       {{.Key}} PRIMARY KEY, -- lower(registrationId)
    group_key {{.Key}},             -- lower(enrollmentGroupId); NULL for individual enrollments
    group_id  TEXT NOT NULL,        -- as written
    doc       TEXT NOT NULL,        -- DeviceRegistrationResult
    payload   {{.Blob}},            -- the device's last payload, verbatim; NULL when none
    etag      TEXT NOT NULL,        -- base64 of a quoted etag
    created   BIGINT NOT NULL,
    updated   BIGINT NOT NULL
);
CREATE INDEX registrations_group ON registrations (group_key, key);

CREATE TABLE operations (
    id              TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT, -- DeviceRegistrationResult; NULL while assigning
    created         BIGINT NOT NULL,
    expires         BIGINT NOT NULL
);
CREATE INDEX operations_expires ON operations (expires);
