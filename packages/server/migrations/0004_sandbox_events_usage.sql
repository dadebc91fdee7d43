-- Live sandbox events and the usage chart, written by triggers so every path that changes a
-- sandbox's status (API, reconciler, expiry job, host deletion) is covered without each
-- remembering to.

-- `nbx_sandbox` carries {op, id, team_id, status} on creation and on every status change; the
-- control plane's event stream (GET /v1/events) reads the row and sends it to the team.
CREATE FUNCTION nbx_notify_sandbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('nbx_sandbox', json_build_object(
    'op', lower(TG_OP), 'id', NEW.id, 'team_id', NEW.team_id, 'status', NEW.status)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER sandboxes_notify_insert AFTER INSERT ON sandboxes
  FOR EACH ROW EXECUTE FUNCTION nbx_notify_sandbox();
CREATE TRIGGER sandboxes_notify_status AFTER UPDATE OF status ON sandboxes
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION nbx_notify_sandbox();

-- One row per stretch of time a sandbox was running. No foreign key to sandboxes: the history
-- outlives the sandbox; it goes with its team, and rows that ended over a day ago are pruned.
CREATE TABLE sandbox_running_periods (
  sandbox_id text NOT NULL,
  team_id    text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  vcpus      integer NOT NULL,
  memory_mb  integer NOT NULL,
  started_at timestamptz NOT NULL,
  ended_at   timestamptz,
  PRIMARY KEY (sandbox_id, started_at)
);
CREATE INDEX sandbox_running_periods_team ON sandbox_running_periods (team_id, started_at);
CREATE INDEX sandbox_running_periods_open ON sandbox_running_periods (sandbox_id)
  WHERE ended_at IS NULL;

CREATE FUNCTION nbx_track_running() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.status = 'running' AND NEW.status <> 'running' THEN
    UPDATE sandbox_running_periods SET ended_at = now()
      WHERE sandbox_id = NEW.id AND ended_at IS NULL;
  END IF;
  IF NEW.status = 'running' AND (TG_OP = 'INSERT' OR OLD.status <> 'running') THEN
    INSERT INTO sandbox_running_periods (sandbox_id, team_id, vcpus, memory_mb, started_at)
      VALUES (NEW.id, NEW.team_id, NEW.vcpus, NEW.memory_mb, clock_timestamp())
      ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER sandboxes_track_running_insert AFTER INSERT ON sandboxes
  FOR EACH ROW EXECUTE FUNCTION nbx_track_running();
CREATE TRIGGER sandboxes_track_running_status AFTER UPDATE OF status ON sandboxes
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION nbx_track_running();

-- Sandboxes already running when this migration runs start their history now.
INSERT INTO sandbox_running_periods (sandbox_id, team_id, vcpus, memory_mb, started_at)
  SELECT id, team_id, vcpus, memory_mb, COALESCE(started_at, now())
  FROM sandboxes WHERE status = 'running';
