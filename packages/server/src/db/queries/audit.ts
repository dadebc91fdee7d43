import type { Queryable } from "../db.js";

export type AuditActorType = "user" | "api_key" | "host" | "system";

export interface AuditEvent {
  /** Null for events outside any team (platform-admin actions on users). */
  teamId: string | null;
  actorType: AuditActorType;
  actorId: string | null;
  /** `<resource>.<verb>`, e.g. `api_key.create`, `member.remove`. */
  action: string;
  resourceType: string;
  resourceId: string | null;
  metadata?: Record<string, unknown>;
}

export interface AuditEventRow {
  id: number;
  team_id: string | null;
  actor_type: AuditActorType;
  actor_id: string | null;
  action: string;
  resource_type: string;
  resource_id: string | null;
  metadata: Record<string, unknown>;
  created_at: Date;
}

export async function recordAudit(db: Queryable, e: AuditEvent): Promise<void> {
  await db.query(
    `INSERT INTO audit_events (team_id, actor_type, actor_id, action, resource_type, resource_id,
       metadata)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [
      e.teamId,
      e.actorType,
      e.actorId,
      e.action,
      e.resourceType,
      e.resourceId,
      JSON.stringify(e.metadata ?? {}),
    ],
  );
}

/**
 * A team's events (or, with teamId null, the events outside any team), newest first. Not read
 * by any route yet: kept for the audit-log API that will list them.
 */
export const listAuditEvents = (db: Queryable, teamId: string | null, limit = 100) =>
  db.query<AuditEventRow>(
    `SELECT * FROM audit_events WHERE team_id IS NOT DISTINCT FROM $1
     ORDER BY created_at DESC, id DESC LIMIT $2`,
    [teamId, limit],
  );
