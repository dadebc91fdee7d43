-- Nestbox control plane schema. Ids are prefixed text (`usr_…`, `team_…`); sandbox ids are the
-- 20-character DNS labels the agents use. Times are timestamptz (UTC on the wire).

CREATE TABLE users (
  id            text PRIMARY KEY,
  email         text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  name          text NOT NULL,
  is_admin      boolean NOT NULL DEFAULT false,
  status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE teams (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  slug        text NOT NULL UNIQUE,
  -- The platform team owns the built-in templates (`base`) and the all-in-one admin's key.
  is_platform boolean NOT NULL DEFAULT false,
  created_at  timestamptz NOT NULL DEFAULT now(),
  deleted_at  timestamptz
);
CREATE UNIQUE INDEX teams_one_platform ON teams (is_platform) WHERE is_platform;

CREATE TABLE memberships (
  team_id    text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  is_default boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (team_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE api_keys (
  id           text PRIMARY KEY,
  team_id      text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  name         text NOT NULL,
  -- SHA-256 hex of the 40 hex characters after the `nbx_`/`e2b_` spelling, so both spellings
  -- of one secret find the same row.
  key_hash     text NOT NULL UNIQUE,
  key_prefix   text NOT NULL,
  created_by   text REFERENCES users (id) ON DELETE SET NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);
CREATE INDEX api_keys_team ON api_keys (team_id, created_at DESC);

CREATE TABLE hosts (
  id                text PRIMARY KEY,
  name              text NOT NULL,
  -- Base URL of the host agent's Connect RPC endpoint, set at registration.
  address           text,
  status            text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'online', 'unreachable', 'offline')),
  runtime           text,
  arch              text,
  cpu_cores         integer,
  memory_mb         bigint,
  disk_mb           bigint,
  agent_version     text,
  last_heartbeat_at timestamptz,
  created_by        text REFERENCES users (id) ON DELETE SET NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One-time registration tokens and rotating refresh tokens; only hashes are stored.
CREATE TABLE host_tokens (
  id         text PRIMARY KEY,
  host_id    text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  kind       text NOT NULL CHECK (kind IN ('registration', 'refresh')),
  token_hash text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at    timestamptz,
  revoked_at timestamptz
);
CREATE INDEX host_tokens_host ON host_tokens (host_id);

CREATE TABLE templates (
  id           text PRIMARY KEY,
  team_id      text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  name         text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('base', 'snapshot')),
  -- Snapshot templates live on the host that took them (no replication yet).
  host_id      text REFERENCES hosts (id) ON DELETE SET NULL,
  vcpus        integer,
  memory_mb    integer,
  size_bytes   bigint NOT NULL DEFAULT 0,
  default_user text,
  default_env  jsonb NOT NULL DEFAULT '{}',
  metadata     jsonb NOT NULL DEFAULT '{}',
  created_by   text REFERENCES users (id) ON DELETE SET NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (team_id, name)
);

CREATE TABLE sandboxes (
  id                    text PRIMARY KEY,
  team_id               text NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
  host_id               text REFERENCES hosts (id) ON DELETE SET NULL,
  template_id           text REFERENCES templates (id) ON DELETE SET NULL,
  template              text NOT NULL,
  status                text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'paused', 'stopped', 'error', 'missing')),
  error                 text,
  vcpus                 integer NOT NULL,
  memory_mb             integer NOT NULL,
  disk_size_mb          integer NOT NULL,
  timeout_sec           integer NOT NULL,
  allow_internet_access boolean NOT NULL DEFAULT true,
  env_vars              jsonb NOT NULL DEFAULT '{}',
  metadata              jsonb NOT NULL DEFAULT '{}',
  envd_version          text,
  envd_access_token     text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  started_at            timestamptz,
  last_active_at        timestamptz,
  ended_at              timestamptz,
  updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sandboxes_team ON sandboxes (team_id, created_at DESC, id DESC);
CREATE INDEX sandboxes_team_status ON sandboxes (team_id, status);
CREATE INDEX sandboxes_host_live ON sandboxes (host_id)
  WHERE status IN ('pending', 'running', 'paused', 'missing');
CREATE INDEX sandboxes_metadata ON sandboxes USING gin (metadata);

CREATE TABLE sandbox_metric_points (
  sandbox_id text NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
  tier       text NOT NULL CHECK (tier IN ('10m', '2h', '24h')),
  ts         timestamptz NOT NULL,
  cpu_pct    double precision NOT NULL,
  mem_bytes  bigint NOT NULL,
  disk_bytes bigint NOT NULL,
  PRIMARY KEY (sandbox_id, tier, ts)
);

CREATE TABLE audit_events (
  id            bigserial PRIMARY KEY,
  team_id       text REFERENCES teams (id) ON DELETE CASCADE,
  actor_type    text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'host', 'system')),
  actor_id      text,
  action        text NOT NULL,
  resource_type text NOT NULL,
  resource_id   text,
  metadata      jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_team ON audit_events (team_id, created_at DESC, id DESC);
