import { first, type Queryable } from "../db.js";

export interface TemplateRow {
  id: string;
  team_id: string;
  name: string;
  kind: "base" | "snapshot";
  host_id: string | null;
  vcpus: number | null;
  memory_mb: number | null;
  size_bytes: number;
  default_user: string | null;
  default_env: Record<string, string>;
  metadata: Record<string, string>;
  created_by: string | null;
  created_at: Date;
  /** The host agents' name for it when set (admin platform snapshots); else the rule below. */
  agent_name: string | null;
}

/**
 * The name the host agent knows a template by: `agent_name` when the row has one; else platform
 * templates keep their own name (`base` is built by `nestbox image build`) and team templates
 * use their id, so two teams may both have a template called `py` without colliding on a host.
 */
export const agentTemplateName = (
  t: Pick<TemplateRow, "id" | "name" | "team_id"> & { agent_name?: string | null },
  platformTeamId: string,
) => t.agent_name ?? (t.team_id === platformTeamId ? t.name : t.id);

/** A team's own template of that name, else the platform's. */
export const resolveTemplate = (
  db: Queryable,
  teamId: string,
  platformTeamId: string,
  name: string,
) =>
  first<TemplateRow>(
    db,
    `SELECT * FROM templates WHERE name = $1 AND team_id = ANY($2::text[])
     ORDER BY (team_id = $3) DESC LIMIT 1`,
    [name, [teamId, platformTeamId], teamId],
  );

export const listTemplates = (db: Queryable, teamId: string, platformTeamId: string) =>
  db.query<TemplateRow>(
    `SELECT * FROM templates WHERE team_id = ANY($1::text[]) ORDER BY created_at DESC, id DESC`,
    [[teamId, platformTeamId]],
  );

export const getTemplateByName = (db: Queryable, teamId: string, name: string) =>
  first<TemplateRow>(db, "SELECT * FROM templates WHERE team_id = $1 AND name = $2", [
    teamId,
    name,
  ]);

export async function insertTemplate(
  db: Queryable,
  t: Omit<TemplateRow, "created_at" | "agent_name"> & { agent_name?: string | null },
): Promise<TemplateRow> {
  const row = await first<TemplateRow>(
    db,
    `INSERT INTO templates (id, team_id, name, kind, host_id, vcpus, memory_mb, size_bytes,
       default_user, default_env, metadata, created_by, agent_name)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *`,
    [
      t.id,
      t.team_id,
      t.name,
      t.kind,
      t.host_id,
      t.vcpus,
      t.memory_mb,
      t.size_bytes,
      t.default_user,
      JSON.stringify(t.default_env),
      JSON.stringify(t.metadata),
      t.created_by,
      t.agent_name ?? null,
    ],
  );
  if (!row) throw new Error(`insert of template ${t.id} returned no row`);
  return row;
}

export async function deleteTemplate(db: Queryable, id: string): Promise<void> {
  await db.query("DELETE FROM templates WHERE id = $1", [id]);
}

/** The platform's `base` template row exists (idempotent; called at start). */
export async function ensureBaseTemplate(db: Queryable, platformTeamId: string, id: string) {
  await db.query(
    `INSERT INTO templates (id, team_id, name, kind) VALUES ($1, $2, 'base', 'base')
     ON CONFLICT (team_id, name) DO NOTHING`,
    [id, platformTeamId],
  );
}
