import { createRoute, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { requireCaller } from "../../auth/middleware.js";
import { recordAudit } from "../../db/queries/audit.js";
import {
  addHostTag,
  deleteHost,
  getHost,
  getHostDetail,
  type HostDetail,
  listHosts,
  listHostTags,
  liveSandboxIdsOnHost,
  removeHostTag,
  setHostDraining,
} from "../../db/queries/hosts.js";
import { getMembership, getPlatformTeam, getTeam } from "../../db/queries/teams.js";
import type { Caller } from "../../domain/caller.js";
import { ApiError, badRequest, forbidden, notFound } from "../../errors.js";
import { createHost, newRegistrationToken } from "../../hosts/registration.js";
import { newRouter } from "../app.js";
import type { AppDeps, AppEnv } from "../context.js";
import { errorResponses } from "../schemas.js";
import { addHostAgentRoutes } from "./host-agent-routes.js";
import { HostIdParam, HostSchema, HostTag, hostView, json, responses403 } from "./host-schemas.js";

export { hostView } from "./host-schemas.js";

/** User sessions and API keys (which act for their team, never as platform admins). */
const security: { [scheme: string]: string[] }[] = [{ bearer: [] }, { apiKey: [] }];

const isAdmin = (c: Caller) => c.kind === "user" && c.isAdmin;
/** Team owners and admins manage their BYOC team's hosts; members only look. */
const managesTeam = (c: Caller) => c.kind === "user" && (c.role === "owner" || c.role === "admin");

/**
 * The host if the caller may see it (platform admins: any; others: their current team's BYOC
 * hosts) and, for `write`, change it (platform admins, or that team's owner/admin); 404 for a
 * host the caller cannot see, 403 for one it may see but not change.
 */
async function hostFor(
  deps: AppDeps,
  c: Context<AppEnv>,
  id: string,
  access: "read" | "write",
): Promise<HostDetail> {
  const caller = c.get("caller");
  const host = await getHostDetail(deps.db, id);
  if (!host) throw notFound("host");
  if (isAdmin(caller)) return host;
  if (host.type !== "byoc" || host.team_id !== caller.teamId) throw notFound("host");
  if (access === "write" && !managesTeam(caller))
    throw forbidden("only the team's owner or admins (or a platform admin) can change its hosts");
  return host;
}

/** Who did it, for the audit trail. */
const actor = (c: Caller) =>
  c.kind === "user"
    ? { actorType: "user" as const, actorId: c.userId }
    : { actorType: "api_key" as const, actorId: c.keyId };

const CreateHostBody = z
  .object({
    name: z
      .string()
      .regex(
        /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
        "must be 1-63 characters A-Z, a-z, 0-9, . _ - (starting with a letter or digit)",
      ),
    type: z.enum(["regular", "byoc"]).default("regular"),
    team_id: z
      .string()
      .regex(/^team_[a-z0-9]{20}$/, "must be a team id")
      .optional()
      .openapi({ description: "byoc only: the BYOC team that owns the host" }),
  })
  .strict();

const HostWithToken = z.object({ host: HostSchema, registration_token: z.string() });

const HasActiveSandboxes = z
  .object({
    error: z.object({
      code: z.literal("has_active_sandboxes"),
      message: z.string(),
      sandbox_ids: z.array(z.string()),
    }),
  })
  .openapi("HasActiveSandboxesError");

/**
 * Hosts: platform admins create regular and BYOC hosts, a BYOC team's owner/admins their own
 * (each with a one-time registration token); listing, deleting, draining and tags follow the
 * same visibility (hostFor). Agent-facing routes are in host-agent-routes.ts.
 */
export function hostRoutes(deps: AppDeps) {
  const r = newRouter();
  const { db } = deps;
  const caller = requireCaller(deps, { apiKey: true });
  addHostAgentRoutes(r, deps);

  const audit = async (
    c: Context<AppEnv>,
    action: "host.create" | "host.delete",
    host: { id: string; name: string; team_id: string | null },
    metadata: Record<string, unknown> = {},
  ) => {
    const teamId = host.team_id ?? (await getPlatformTeam(db))?.id ?? null;
    await recordAudit(db, {
      teamId,
      ...actor(c.get("caller")),
      action,
      resourceType: "host",
      resourceId: host.id,
      metadata: { name: host.name, ...metadata },
    });
  };

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts",
      summary:
        "Create a host and its one-time registration token (regular: platform admin; byoc: also the team's owner/admins)",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: { body: { ...json(CreateHostBody), required: true } },
      responses: {
        201: {
          description: "Created; the registration token is shown only here and works once, for 1 h",
          ...json(HostWithToken),
        },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const who = c.get("caller");
      let teamId: string | null = null;
      if (b.type === "regular") {
        if (b.team_id !== undefined)
          throw badRequest(
            "team_id is only for byoc hosts (regular hosts serve every team)",
            "team_id",
          );
        if (!isAdmin(who)) throw forbidden("only a platform admin can create regular hosts");
      } else {
        if (b.team_id === undefined)
          throw badRequest("a byoc host needs team_id: the BYOC team that owns it", "team_id");
        if (!isAdmin(who)) {
          const m =
            who.kind === "user" ? await getMembership(db, b.team_id, who.userId) : undefined;
          if (!m || (m.role !== "owner" && m.role !== "admin"))
            throw forbidden(
              "only the team's owner or admins (or a platform admin) can add its hosts",
            );
        }
        const team = await getTeam(db, b.team_id);
        if (!team) throw notFound(`team ${b.team_id}`);
        if (!team.is_byoc)
          throw new ApiError(
            403,
            "team_not_byoc",
            `team ${team.name} is not a BYOC team: a platform admin must enable bring-your-own-compute for it first`,
          );
        teamId = team.id;
      }
      const { host, registrationToken } = await createHost(db, {
        name: b.name,
        createdBy: who.kind === "user" ? who.userId : null,
        type: b.type,
        teamId,
      });
      await audit(c, "host.create", host, { type: b.type });
      const detail = await getHostDetail(db, host.id);
      if (!detail) throw notFound("host");
      return c.json({ host: hostView(detail), registration_token: registrationToken }, 201);
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/hosts",
      summary: "Hosts: all for platform admins, the BYOC hosts of the caller's team for others",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: {
        query: z.object({
          type: z.enum(["regular", "byoc"], { error: "must be regular or byoc" }).optional(),
        }),
      },
      responses: {
        200: { description: "Hosts", ...json(z.object({ hosts: z.array(HostSchema) })) },
        ...errorResponses,
      },
    }),
    async (c) => {
      const who = c.get("caller");
      const { type } = c.req.valid("query");
      const hosts = isAdmin(who)
        ? await listHosts(db, { type })
        : await listHosts(db, { teamId: who.teamId, type: type ?? "byoc" });
      return c.json({ hosts: hosts.map(hostView) }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/hosts/{id}",
      summary: "One host (platform admin: any; others: their team's BYOC hosts)",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: { params: HostIdParam },
      responses: {
        200: { description: "The host", ...json(HostSchema) },
        ...errorResponses,
      },
    }),
    async (c) => c.json(hostView(await hostFor(deps, c, c.req.valid("param").id, "read")), 200),
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/hosts/{id}/delete-preview",
      summary: "What deleting a host would stop: its active sandboxes",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: { params: HostIdParam },
      responses: {
        200: {
          description: "The host and the sandboxes a forced delete would stop",
          ...json(z.object({ host: HostSchema, sandbox_ids: z.array(z.string()) })),
        },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const host = await hostFor(deps, c, c.req.valid("param").id, "write");
      const ids = await liveSandboxIdsOnHost(db, host.id);
      return c.json({ host: hostView(host), sandbox_ids: ids }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/hosts/{id}",
      summary: "Delete a host; 409 has_active_sandboxes while it has any, unless force=true",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: {
        params: HostIdParam,
        query: z.object({
          force: z.enum(["true", "false"], { error: "must be true or false" }).optional().openapi({
            description:
              "mark its active sandboxes stopped, delete anyway, and tell its agent to destroy them and exit",
          }),
        }),
      },
      responses: {
        204: { description: "Deleted" },
        ...errorResponses,
        ...responses403,
        409: { description: "The host has active sandboxes", ...json(HasActiveSandboxes) },
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const force = c.req.valid("query").force === "true";
      const visible = await hostFor(deps, c, id, "write");
      // Read before the delete: its address is needed to stop its agent afterwards.
      const host = force ? await getHost(db, id) : undefined;
      const res = await deleteHost(db, id, force);
      if (res === "not_found") throw notFound("host");
      if (res !== "deleted") {
        throw new ApiError(
          409,
          "has_active_sandboxes",
          `host ${visible.name} has ${res.liveSandboxIds.length} active sandbox(es): destroy them first, or delete with force=true to stop them`,
          { sandbox_ids: res.liveSandboxIds },
        );
      }
      await audit(c, "host.delete", visible, { forced: force });
      // The rows are already consistent (sandboxes stopped, host gone); what still runs on the
      // host is destroyed by its agent's Terminate, so no VM outlives its database row.
      if (host?.address) await deps.agents.terminate(id, host.address);
      else deps.agents.forget(id);
      return c.body(null, 204);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts/{id}/token",
      summary: "A new registration token for a host that has not registered yet",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: { params: HostIdParam },
      responses: {
        201: {
          description:
            "The new one-time token (1 h); earlier unused tokens of the host are revoked",
          ...json(HostWithToken),
        },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const host = await hostFor(deps, c, c.req.valid("param").id, "write");
      const res = await newRegistrationToken(db, host.id);
      if (!res)
        throw new ApiError(
          409,
          "invalid_state",
          `host ${host.name} is ${host.status}, not pending: it registered already (its agent keeps its credentials)`,
        );
      return c.json({ host: hostView(host), registration_token: res.registrationToken }, 201);
    },
  );

  for (const [action, draining] of [
    ["drain", true],
    ["undrain", false],
  ] as const) {
    r.openapi(
      createRoute({
        method: "post",
        path: `/hosts/{id}/${action}`,
        summary: draining
          ? "Drain a host: no new sandboxes are placed on it; the ones it has keep running"
          : "Undrain a host: it takes new sandboxes again",
        tags: ["hosts"],
        security,
        middleware: [caller] as const,
        request: { params: HostIdParam },
        responses: {
          200: { description: "The host", ...json(HostSchema) },
          ...errorResponses,
          ...responses403,
        },
      }),
      async (c) => {
        const host = await hostFor(deps, c, c.req.valid("param").id, "write");
        if (!(await setHostDraining(db, host.id, draining))) throw notFound("host");
        const after = await getHostDetail(db, host.id);
        if (!after) throw notFound("host");
        return c.json(hostView(after), 200);
      },
    );
  }

  r.openapi(
    createRoute({
      method: "get",
      path: "/hosts/{id}/tags",
      summary: "A host's tags, sorted",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: { params: HostIdParam },
      responses: {
        200: { description: "Tags", ...json(z.object({ tags: z.array(z.string()) })) },
        ...errorResponses,
      },
    }),
    async (c) => {
      const host = await hostFor(deps, c, c.req.valid("param").id, "read");
      return c.json({ tags: await listHostTags(db, host.id) }, 200);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts/{id}/tags",
      summary: "Add a tag (idempotent); sandboxes created with host_tags go only to hosts with all",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: {
        params: HostIdParam,
        body: { ...json(z.object({ tag: HostTag }).strict()), required: true },
      },
      responses: { 204: { description: "Tagged" }, ...errorResponses, ...responses403 },
    }),
    async (c) => {
      const host = await hostFor(deps, c, c.req.valid("param").id, "write");
      await addHostTag(db, host.id, c.req.valid("json").tag);
      return c.body(null, 204);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/hosts/{id}/tags/{tag}",
      summary: "Remove a tag (idempotent)",
      tags: ["hosts"],
      security,
      middleware: [caller] as const,
      request: {
        params: HostIdParam.extend({
          tag: HostTag.openapi({ param: { name: "tag", in: "path" } }),
        }),
      },
      responses: { 204: { description: "Removed" }, ...errorResponses, ...responses403 },
    }),
    async (c) => {
      const { id, tag } = c.req.valid("param");
      const host = await hostFor(deps, c, id, "write");
      await removeHostTag(db, host.id, tag);
      return c.body(null, 204);
    },
  );

  return r;
}
