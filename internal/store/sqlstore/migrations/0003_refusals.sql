-- The refusal journal: device requests dpsd refused, newest kept, bounded by
-- count and age (TrimRefusals). Entries are written in batches off the
-- request path and never updated. Nothing here is secret: the credential is
-- a summary (subjects, thumbprints, the SAS token's skn), never a key or a
-- signature. `dpsd export` leaves the journal out.

CREATE TABLE refusals (
    id               {{.Key}} PRIMARY KEY, -- assigned by the store; orders entries of one instant
    at               BIGINT NOT NULL,    -- Unix nanoseconds
    transport        TEXT NOT NULL,      -- https, mqtt, mqtt-ws
    operation        TEXT NOT NULL,      -- register, poll, lookup
    registration_id  TEXT NOT NULL,      -- as the device sent it
    registration_key {{.Key}} NOT NULL,  -- lower(registration_id)
    credential       TEXT NOT NULL,
    status           INTEGER NOT NULL,
    error_code       INTEGER NOT NULL,
    reason           TEXT NOT NULL,
    tracking_id      TEXT NOT NULL,
    peer             TEXT NOT NULL
);
CREATE INDEX refusals_at ON refusals (at, id);
CREATE INDEX refusals_registration ON refusals (registration_key, at, id);
CREATE INDEX refusals_error_code ON refusals (error_code, at, id);
