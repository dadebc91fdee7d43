import { Code, ConnectError } from "@connectrpc/connect";
import type { Db } from "../db/db.js";
import { transitionSandbox } from "../db/queries/sandboxes.js";
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
   * destroys the sandbox afterwards. The sandbox row is marked paused before the agent call so
   * the reconciler does not mistake the in-flight snapshot for a vanished sandbox, and put back
   * if the call fails. The work completes even when the client has gone away.
   */
  async snapshot(
    teamId: string,
    sandboxId: string,
    name: string,
    createdBy: string | null,
  ): Promise<TemplateRow> {
    const sandbox = await this.sandboxes.get(teamId, sandboxId);
    if (sandbox.status !== "running" && sandbox.status !== "paused")
      throw invalidState(
        `sandbox ${sandboxId} is ${sandbox.status}; only running or paused sandboxes can be snapshotted`,
      );
    if (await getTemplateByName(this.db, this.platformTeamId, name))
      throw conflict("name_taken", `template name ${name} is reserved by a platform template`);
    if (await getTemplateByName(this.db, teamId, name))
      throw conflict("name_taken", `your team already has a template named ${name}`);
    const agent = await this.sandboxes.agentFor(sandbox);
    const before = sandbox.status;
    this.sandboxes.forgetRunning(sandboxId);
    if (
      before === "running" &&
      !(await transitionSandbox(this.db, sandboxId, ["running"], "paused"))
    )
      throw invalidState(`sandbox ${sandboxId} changed state`);
    const id = newId("tpl");
    const template = { id, name, team_id: teamId };
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
      return insertTemplate(tx, {
        id,
        team_id: teamId,
        name,
        kind: "snapshot",
        host_id: sandbox.host_id,
        vcpus: sandbox.vcpus,
        memory_mb: sandbox.memory_mb,
        size_bytes: sizeBytes,
        default_user: null,
        default_env: sandbox.env_vars,
        metadata: sandbox.metadata,
        created_by: createdBy,
      });
    });
    this.log(`[sandbox ${sandboxId}] snapshotted into template ${id} (${name}), sandbox destroyed`);
    return row;
  }

  /** Deletes a team template; platform templates are refused before any host is touched. */
  async delete(teamId: string, name: string, callerIsAdmin: boolean): Promise<void> {
    const own = await getTemplateByName(this.db, teamId, name);
    const platform = own ? undefined : await getTemplateByName(this.db, this.platformTeamId, name);
    if (platform && !callerIsAdmin) throw forbidden(`template ${name} is a platform template`);
    const t = own ?? platform;
    if (!t) throw notFound(`template ${name}`);
    if (t.kind === "base" && t.team_id === this.platformTeamId)
      throw forbidden("the built-in base template cannot be deleted");
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
