-- Several control planes (issue 14): the expiry job of one replica claims a sandbox before it
-- kills or pauses it, so a sandbox is expired once even when the replica that holds the job's
-- lock changes while an expiry is under way. A lease, not a flag: a claim whose replica died
-- lapses and another replica expires the sandbox. Not a status change, so no trigger fires.
ALTER TABLE sandboxes ADD COLUMN expiry_claimed_until timestamptz;

-- The housekeeping job deletes metric points older than 30 days every hour.
CREATE INDEX sandbox_metric_points_ts ON sandbox_metric_points (ts);
