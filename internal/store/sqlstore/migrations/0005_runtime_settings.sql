-- Settings operators change while dpsd serves (the fault injection rules),
-- one JSON document each. Every node reads them from here, so a change made
-- through one node reaches all of them.

CREATE TABLE runtime_settings (
    key     {{.Key}} PRIMARY KEY, -- lower(name)
    name    TEXT NOT NULL,
    doc     TEXT NOT NULL,
    etag    TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
