import { forgetRecentApiKeys } from "../auth/api-keys.js";
import type { Db } from "../db/db.js";
import {
  getSandboxAnyTeam,
  invalidateUserTokens,
  liveSandboxIdsOfTeam,
  revokeApiKeysCreatedBy,
  teamsSolelyOwnedBy,
} from "../db/queries/admin.js";
import { LIVE_STATUSES, transitionSandbox } from "../db/queries/sandboxes.js";
import { revokeAllSessionsOf } from "../db/queries/user-sessions.js";
import { getUserById, type UserRow, updateUserFlags } from "../db/queries/users.js";
import { conflict, notFound } from "../errors.js";
import type { SandboxService } from "./sandboxes.js";
import { deleteTeam } from "./teams.js";
import type { TemplateService } from "./templates.js";

export interface ActiveChange {
  user: UserRow;
  /** What a deactivation ended (all empty for an activation). */
  revokedKeys: string[];
  endedSessions: number;
  destroyedSandboxes: string[];
}

/**
 * What platform admins do across teams: delete teams with their sandboxes, deactivate accounts
 * (keys, sessions and the sandboxes only they answer for), platform templates. Routes check the
 * admin flag; this layer trusts its caller.
 */
export class AdminService {
  constructor(
    readonly db: Db,
    readonly sandboxes: SandboxService,
    readonly templates: TemplateService,
    private readonly log: (line: string) => void = (l) => console.log(l),
  ) {}

  /** Deletes any team but the platform's, destroying its live sandboxes first. */
  deleteTeam(teamId: string): Promise<{ destroyed: string[] }> {
    return deleteTeam(this.db, teamId, {
      destroyLive: (ids) => this.destroyAll(teamId, ids),
    });
  }

  /**
   * Activates or deactivates an account. Deactivating revokes every API key the user created
   * (in any team: they do not come back with a re-activation), ends their browser sessions and
   * refuses every user token issued so far, and
   * destroys the live sandboxes of the teams they solely own.
   */
  async setActive(actorId: string, userId: string, active: boolean): Promise<ActiveChange> {
    // Yours is active (you are calling): only another admin may deactivate you.
    if (userId === actorId)
      throw conflict(
        "conflict",
        "you cannot change your own account's status: ask another admin to deactivate it",
      );
    if (!(await getUserById(this.db, userId))) throw notFound("user");
    const user = await updateUserFlags(this.db, userId, {
      status: active ? "active" : "disabled",
    });
    if (!user) throw notFound("user");
    if (active) return { user, revokedKeys: [], endedSessions: 0, destroyedSandboxes: [] };
    await invalidateUserTokens(this.db, userId, new Date());
    const revokedKeys = await revokeApiKeysCreatedBy(this.db, userId);
    forgetRecentApiKeys();
    const endedSessions = await revokeAllSessionsOf(this.db, userId, "disabled");
    const destroyedSandboxes: string[] = [];
    for (const teamId of await teamsSolelyOwnedBy(this.db, userId)) {
      const ids = await liveSandboxIdsOfTeam(this.db, teamId);
      await this.destroyAll(teamId, ids);
      destroyedSandboxes.push(...ids);
    }
    this.log(
      `[admin] user ${userId} deactivated: ${revokedKeys.length} key(s) revoked, ${endedSessions} session(s) ended, ${destroyedSandboxes.length} sandbox(es) destroyed`,
    );
    return { user, revokedKeys, endedSessions, destroyedSandboxes };
  }

  /** A sandbox of any team, or 404. */
  async sandbox(id: string) {
    const row = await getSandboxAnyTeam(this.db, id);
    if (!row) throw notFound(`sandbox ${id}`);
    return row;
  }

  /**
   * Destroys sandboxes of one team. One the agent fails to destroy is marked stopped anyway:
   * the team's owner can no longer reach it, and the reconciler destroys a sandbox its host
   * still runs once the database has it stopped.
   */
  private async destroyAll(teamId: string, ids: readonly string[]): Promise<void> {
    for (const id of ids) {
      try {
        await this.sandboxes.destroy(teamId, id);
      } catch (err) {
        this.log(
          `[sandbox ${id}] admin destroy failed (${err instanceof Error ? err.message : String(err)}); marked stopped, the reconciler removes it from its host`,
        );
        await transitionSandbox(this.db, id, LIVE_STATUSES, "stopped", {
          ended: true,
          error: "destroyed by a platform admin while its host could not be reached",
        });
      }
    }
  }
}
