-- Many hosts, safely (issue 14): bring-your-own-compute teams and their hosts, draining, host
-- tags as a placement constraint.

-- A BYOC team's sandboxes run only on its own hosts, and nobody else's run there. Set by a
-- platform admin, one way (a team cannot go back to shared hosts while its hosts exist).
ALTER TABLE teams ADD COLUMN is_byoc boolean NOT NULL DEFAULT false;

-- `regular` hosts serve every non-BYOC team; a `byoc` host belongs to exactly one team.
ALTER TABLE hosts
  ADD COLUMN type     text NOT NULL DEFAULT 'regular' CHECK (type IN ('regular', 'byoc')),
  ADD COLUMN team_id  text REFERENCES teams (id) ON DELETE CASCADE,
  -- Draining: no new sandboxes are placed here; the ones it has keep running. A flag, not a
  -- status, so that a draining host that goes silent and comes back is still draining.
  ADD COLUMN draining boolean NOT NULL DEFAULT false,
  ADD CONSTRAINT hosts_byoc_team CHECK ((type = 'byoc') = (team_id IS NOT NULL));
CREATE INDEX hosts_team ON hosts (team_id) WHERE team_id IS NOT NULL;

-- Free-form labels (`gpu`, `eu-west`); a create's `host_tags` places only on hosts with all.
CREATE TABLE host_tags (
  host_id    text NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  tag        text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (host_id, tag)
);
CREATE INDEX host_tags_tag ON host_tags (tag);
