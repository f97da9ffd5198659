-- Certificate issuance: the instance's issuing CAs, and a record of every
-- certificate they issued (for listing, recognising a device that presents
-- one, and revocation).

CREATE TABLE issuing_cas (
    key         {{.Key}} PRIMARY KEY, -- lower(name)
    name        TEXT NOT NULL,
    der         {{.Blob}} NOT NULL,   -- the CA certificate
    private_key TEXT NOT NULL,        -- PKCS#8 PEM
    doc         TEXT NOT NULL,        -- chain, origin and issuance policy (JSON)
    etag        TEXT NOT NULL,
    created     BIGINT NOT NULL,
    updated     BIGINT NOT NULL
);

-- Not tied to issuing_cas or registrations by a foreign key: the record of
-- what was issued outlives both.
CREATE TABLE issued_certificates (
    key               {{.Key}} PRIMARY KEY, -- lower-case hex serial number
    serial_number     TEXT NOT NULL,        -- upper-case hex
    registration_key  {{.Key}} NOT NULL,    -- lower(registrationId)
    registration_id   TEXT NOT NULL,
    group_id          TEXT NOT NULL,        -- the enrollment group; '' for an individual enrollment
    ca_key            {{.Key}} NOT NULL,    -- lower(issuing CA name)
    ca_name           TEXT NOT NULL,
    der               {{.Blob}} NOT NULL,
    sha256_thumbprint TEXT NOT NULL,        -- upper-case hex
    not_before        BIGINT NOT NULL,
    not_after         BIGINT NOT NULL,
    created           BIGINT NOT NULL,
    revoked           BIGINT NOT NULL,      -- when it was revoked; 0 while it is not
    revocation_reason TEXT NOT NULL
);
CREATE INDEX issued_certificates_registration ON issued_certificates (registration_key, key);
CREATE INDEX issued_certificates_ca ON issued_certificates (ca_key, key);
CREATE INDEX issued_certificates_thumbprint ON issued_certificates (sha256_thumbprint);
CREATE INDEX issued_certificates_revoked ON issued_certificates (ca_key, revoked, key);
