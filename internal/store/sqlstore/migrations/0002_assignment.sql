-- Assignment that reaches the hub: each linked hub's device registry, where
-- dpsd last put each device and the twin it wrote there, and the pending
-- job of an "assigning" operation with the lease of the node running it.

ALTER TABLE linked_hubs ADD COLUMN device_registry TEXT NOT NULL DEFAULT 'none';
ALTER TABLE linked_hubs ADD COLUMN registry_webhook_url TEXT NOT NULL DEFAULT '';
ALTER TABLE linked_hubs ADD COLUMN registry_webhook_secret TEXT NOT NULL DEFAULT '';

ALTER TABLE registrations ADD COLUMN placement_hub TEXT NOT NULL DEFAULT '';
ALTER TABLE registrations ADD COLUMN placement_device_id TEXT NOT NULL DEFAULT '';
ALTER TABLE registrations ADD COLUMN applied_twin TEXT; -- InitialTwin; NULL when none

-- An assigned record is placed where it was assigned.
UPDATE registrations SET
    placement_hub = COALESCE({{.JSONText "doc" "assignedHub"}}, ''),
    placement_device_id = COALESCE({{.JSONText "doc" "deviceId"}}, '')
WHERE {{.JSONText "doc" "status"}} = 'assigned';

ALTER TABLE operations ADD COLUMN job TEXT; -- NULL once terminal
ALTER TABLE operations ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
-- Only pending jobs are indexed: the sweeper's lookup stays small.
CREATE INDEX operations_lease ON operations (lease_until) WHERE job IS NOT NULL;
