-- Absolute end times and the E2B lifecycle (e2b-compat §2.4). Sandboxes made through the E2B
-- face run with no idle TTL on their host and an `end_at` the control plane enforces: when it
-- passes, the expiry job kills the sandbox or, with on_timeout = 'pause', pauses it. /v1
-- sandboxes keep end_at NULL and live by their idle TTL as before.

ALTER TABLE sandboxes
  ADD COLUMN end_at               timestamptz,
  -- Seconds a sandbox with an end runs after a resume that names no time (its create timeout).
  ADD COLUMN lifetime_sec         integer,
  ADD COLUMN on_timeout           text NOT NULL DEFAULT 'kill' CHECK (on_timeout IN ('kill', 'pause')),
  -- Traffic through the sandbox proxy resumes the sandbox when it is paused.
  ADD COLUMN auto_resume          boolean NOT NULL DEFAULT false,
  -- False: user ports need `e2b-traffic-access-token: <traffic_access_token>` at the proxy.
  ADD COLUMN allow_public_traffic boolean NOT NULL DEFAULT true,
  ADD COLUMN traffic_access_token text;

-- The expiry job's scan (every ~500 ms): running sandboxes that have an end.
CREATE INDEX sandboxes_running_end_at ON sandboxes (end_at)
  WHERE status = 'running' AND end_at IS NOT NULL;
