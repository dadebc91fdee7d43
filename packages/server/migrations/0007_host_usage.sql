-- What a host agent reports with each heartbeat about the resources it has committed (issue 14):
-- shown on the host; NULL until the first heartbeat that carries them (an older agent).
ALTER TABLE hosts
  ADD COLUMN used_memory_mb bigint CHECK (used_memory_mb >= 0),
  ADD COLUMN used_disk_mb   bigint CHECK (used_disk_mb >= 0),
  ADD COLUMN sandbox_count  integer CHECK (sandbox_count >= 0);
