import { forgetRecentApiKeys } from "../auth/api-keys.js";
import type { Queryable } from "../db/db.js";
import { liveSandboxIdsOfTeam } from "../db/queries/admin.js";
import { getTeam, softDeleteTeam } from "../db/queries/teams.js";
import { ApiError, conflict, notFound } from "../errors.js";

/**
 * Team deletion, shared by the owner's `DELETE /v1/teams/{id}` and the platform admin's
 * `DELETE /v1/admin/teams/{id}`. The owner must have killed the team's sandboxes first; an admin
 * passes `destroyLive`, which ends them (the team may be abandoned, or abusive).
 */
export interface DeleteTeamOptions {
  /** Destroys these live sandboxes of the team; without it, live sandboxes refuse the delete. */
  destroyLive?: (sandboxIds: string[]) => Promise<void>;
}

/** A create racing with the delete can bring a sandbox alive after the destroy pass: retry. */
const DESTROY_PASSES = 3;

/** Deletes a live team; returns the sandboxes destroyed on the way (admin deletes). */
export async function deleteTeam(
  db: Queryable,
  teamId: string,
  opts: DeleteTeamOptions = {},
): Promise<{ destroyed: string[] }> {
  const team = await getTeam(db, teamId);
  if (!team) throw notFound("team");
  if (team.is_platform)
    throw conflict(
      "conflict",
      "the platform team cannot be deleted: it owns the built-in templates",
    );
  const destroyed: string[] = [];
  for (let pass = 0; ; pass++) {
    if (opts.destroyLive) {
      const live = await liveSandboxIdsOfTeam(db, teamId);
      if (live.length > 0) {
        await opts.destroyLive(live);
        destroyed.push(...live.filter((id) => !destroyed.includes(id)));
      }
    }
    const outcome = await softDeleteTeam(db, teamId);
    if (outcome === "deleted") break;
    if (!(await getTeam(db, teamId))) throw notFound("team");
    const n = outcome.liveSandboxes;
    if (!opts.destroyLive)
      throw new ApiError(
        409,
        "invalid_state",
        `the team still has ${n} live sandbox${n === 1 ? "" : "es"}: kill ${n === 1 ? "it" : "them"} first`,
        { live_sandboxes: n },
      );
    if (pass + 1 >= DESTROY_PASSES)
      throw new ApiError(
        409,
        "invalid_state",
        `sandboxes of the team keep starting (${n} live after ${DESTROY_PASSES} passes): retry the delete`,
        { live_sandboxes: n },
      );
  }
  // Its keys stop working in this process now, not when the key cache expires.
  forgetRecentApiKeys();
  return { destroyed };
}
