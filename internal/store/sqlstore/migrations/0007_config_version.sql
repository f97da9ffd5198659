-- A value that changes with every write of what registration decisions
-- read and rarely changes: the instance, linked hubs, CA certificates and
-- enrollment groups. Each node keeps those in memory and reads this one row
-- before a decision, so that a change made through any node, or by another
-- process on the same database (dpsd import), is seen by all of them.

CREATE TABLE config_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);

INSERT INTO config_version (id, version) VALUES (1, 1);
