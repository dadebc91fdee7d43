import { Code, ConnectError } from "@connectrpc/connect";
import type { Db, Queryable } from "../db/db.js";
import { liveSandboxIdsOfTemplate, onlineHosts } from "../db/queries/admin.js";
import { type SandboxRecord, transitionSandbox } from "../db/queries/sandboxes.js";
import {
  agentTemplateName,
  deleteTemplate,
  getTemplateByName,
  insertTemplate,
  listTemplates,
  type TemplateRow,
} from "../db/queries/templates.js";
import { ApiError, conflict, forbidden, invalidState, notFound } from "../errors.js";
import { newId } from "../ids.js";
import { agentFailure, type SandboxService } from "./sandboxes.js";

/** The built-in template `nestbox image build` makes; never deleted or replaced. */
const BASE_TEMPLATE = "base";

function checkSnapshottable(sandbox: SandboxRecord): void {
  if (sandbox.status !== "running" && sandbox.status !== "paused")
    throw invalidState(
      `sandbox ${sandbox.id} is ${sandbox.status}; only running or paused sandboxes can be snapshotted`,
    );
}

/** Team templates made from sandboxes, next to the platform's built-in ones. */
export class TemplateService {
  constructor(
    private readonly db: Db,
    private readonly sandboxes: SandboxService,
    private readonly platformTeamId: string,
    private readonly log: (line: string) => void = (l) => console.log(l),
  ) {}

  list(teamId: string): Promise<TemplateRow[]> {
    return listTemplates(this.db, teamId, this.platformTeamId);
  }

  /**
   * Snapshots a running or paused sandbox (memory and disk) into a team template; the agent
   * destroys the sandbox afterwards.
   */
  async snapshot(
    teamId: string,
    sandboxId: string,
    name: string,
    createdBy: string | null,
  ): Promise<TemplateRow> {
    const sandbox = await this.sandboxes.get(teamId, sandboxId);
    checkSnapshottable(sandbox);
    if (await getTemplateByName(this.db, this.platformTeamId, name))
      throw conflict("name_taken", `template name ${name} is reserved by a platform template`);
    if (await getTemplateByName(this.db, teamId, name))
      throw conflict("name_taken", `your team already has a template named ${name}`);
    return this.capture(sandbox, { teamId, name, createdBy });
  }

  /**
   * A platform admin's snapshot of any team's sandbox into a platform template, usable by every
   * team. One of the same name is replaced: the new one is stored on the host under its own id
   * (so both exist until the rows are swapped in one transaction, and a failed snapshot leaves
   * the old one as it was), then the old one's files are deleted from the hosts.
   */
  async snapshotToPlatform(
    sandbox: SandboxRecord,
    name: string,
    createdBy: string | null,
  ): Promise<{ template: TemplateRow; replaced: TemplateRow | undefined }> {
    const old = await getTemplateByName(this.db, this.platformTeamId, name);
    if (name === BASE_TEMPLATE || old?.kind === "base")
      throw forbidden(`the built-in ${name} template cannot be replaced: choose another name`);
    checkSnapshottable(sandbox);
    if (old) {
      const users = (await liveSandboxIdsOfTemplate(this.db, old.id)).filter(
        (id) => id !== sandbox.id,
      );
      if (users.length > 0)
        throw new ApiError(
          409,
          "invalid_state",
          `platform template ${name} is used by ${users.length} live sandbox(es): destroy them first, or choose another name`,
          { sandbox_ids: users },
        );
    }
    const template = await this.capture(sandbox, {
      teamId: this.platformTeamId,
      name,
      createdBy,
      agentNamed: true,
      beforeInsert: old ? (tx) => deleteTemplate(tx, old.id) : undefined,
    });
    if (old) {
      // Best effort: nothing refers to the old files any more (the new template has its own
      // host-side name), so a host that missed the delete only keeps some disk in use.
      const failed = await this.deleteFromHosts(old);
      for (const f of failed)
        this.log(`template ${old.id} (replaced by ${template.id}): files stay on ${f}`);
    }
    return { template, replaced: old };
  }

  /**
   * The agent call and the row: the sandbox row is marked paused before the agent call so the
   * reconciler does not mistake the in-flight snapshot for a vanished sandbox, and put back if
   * the call fails. The work completes even when the client has gone away.
   */
  private async capture(
    sandbox: SandboxRecord,
    target: {
      teamId: string;
      name: string;
      createdBy: string | null;
      /** Store it on the host under its id rather than by the default rule. */
      agentNamed?: boolean;
      /** Runs in the transaction that inserts the row (a replaced row's delete). */
      beforeInsert?: (tx: Queryable) => Promise<void>;
    },
  ): Promise<TemplateRow> {
    const sandboxId = sandbox.id;
    const agent = await this.sandboxes.agentFor(sandbox);
    const before = sandbox.status;
    this.sandboxes.forgetRunning(sandboxId);
    if (
      before === "running" &&
      !(await transitionSandbox(this.db, sandboxId, ["running"], "paused"))
    )
      throw invalidState(`sandbox ${sandboxId} changed state`);
    const id = newId("tpl");
    const agentName = target.agentNamed ? id : null;
    const template = { id, name: target.name, team_id: target.teamId, agent_name: agentName };
    let sizeBytes: number;
    try {
      const res = await agent.createSnapshot({
        sandboxId,
        name: agentTemplateName(template, this.platformTeamId),
      });
      sizeBytes = Number(res.sizeBytes);
    } catch (err) {
      await transitionSandbox(this.db, sandboxId, ["paused"], before);
      throw agentFailure(sandboxId, "snapshot", err);
    }
    const row = await this.db.transaction(async (tx) => {
      await transitionSandbox(tx, sandboxId, ["paused", "running"], "stopped", { ended: true });
      await target.beforeInsert?.(tx);
      return insertTemplate(tx, {
        id,
        team_id: target.teamId,
        name: target.name,
        kind: "snapshot",
        host_id: sandbox.host_id,
        vcpus: sandbox.vcpus,
        memory_mb: sandbox.memory_mb,
        size_bytes: sizeBytes,
        default_user: null,
        default_env: sandbox.env_vars,
        metadata: sandbox.metadata,
        created_by: target.createdBy,
        agent_name: agentName,
      });
    });
    this.log(
      `[sandbox ${sandboxId}] snapshotted into template ${id} (${target.name}, team ${target.teamId}), sandbox destroyed`,
    );
    return row;
  }

  /**
   * Deletes a platform template from every online host, then its row. Refused for `base`
   * (403) and while live sandboxes use it (409, their ids in `sandbox_ids`); a host that fails
   * the delete keeps the row (502: retry, the delete is idempotent).
   */
  async deletePlatform(name: string): Promise<TemplateRow> {
    const t = await getTemplateByName(this.db, this.platformTeamId, name);
    if (!t) throw notFound(`platform template ${name}`);
    if (t.kind === "base") throw forbidden("the built-in base template cannot be deleted");
    const users = await liveSandboxIdsOfTemplate(this.db, t.id);
    if (users.length > 0)
      throw new ApiError(
        409,
        "invalid_state",
        `template ${name} is used by ${users.length} live sandbox(es): destroy them first`,
        { sandbox_ids: users },
      );
    const failed = await this.deleteFromHosts(t);
    if (failed.length > 0)
      throw new ApiError(
        502,
        "agent_error",
        `deleting template ${name} failed on ${failed.join("; ")}: retry once the host is back`,
      );
    await deleteTemplate(this.db, t.id);
    this.log(`template ${t.id} (${name}, platform) deleted from every online host`);
    return t;
  }

  /** Asks every online host to delete the template's files; returns the failures, by host. */
  private async deleteFromHosts(t: TemplateRow): Promise<string[]> {
    const name = agentTemplateName(t, this.platformTeamId);
    const failed: string[] = [];
    for (const h of await onlineHosts(this.db)) {
      try {
        await this.sandboxes.agentClients.get(h.id, h.address).deleteSnapshot({ name });
      } catch (err) {
        // Never there (a snapshot lives on the host that took it) is what we want.
        if (err instanceof ConnectError && err.code === Code.NotFound) continue;
        failed.push(`host ${h.id}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return failed;
  }

  /** Deletes a team template; platform templates only for admins (and the platform team). */
  async delete(teamId: string, name: string, callerIsAdmin: boolean): Promise<void> {
    const own = await getTemplateByName(this.db, teamId, name);
    const platform = own ? undefined : await getTemplateByName(this.db, this.platformTeamId, name);
    if (platform && !callerIsAdmin) throw forbidden(`template ${name} is a platform template`);
    const t = own ?? platform;
    if (!t) throw notFound(`template ${name}`);
    if (t.kind === "base" && t.team_id === this.platformTeamId)
      throw forbidden("the built-in base template cannot be deleted");
    // Platform templates (an admin's, or the platform team's own key) leave every host.
    if (t.team_id === this.platformTeamId) {
      await this.deletePlatform(name);
      return;
    }
    if (t.host_id) {
      const host = await this.db.query<{ id: string; address: string | null; status: string }>(
        "SELECT id, address, status FROM hosts WHERE id = $1",
        [t.host_id],
      );
      const h = host[0];
      if (h?.address && h.status === "online") {
        try {
          const agent = this.sandboxes.agentClients.get(h.id, h.address);
          await agent.deleteSnapshot({ name: agentTemplateName(t, this.platformTeamId) });
        } catch (err) {
          if (!(err instanceof ConnectError && err.code === Code.NotFound))
            throw new ApiError(
              502,
              "agent_error",
              `deleting template files failed: ${String(err)}`,
            );
        }
      } else {
        this.log(
          `template ${t.id}: host ${t.host_id} not online; its files stay until the host prunes them`,
        );
      }
    }
    await deleteTemplate(this.db, t.id);
  }
}
