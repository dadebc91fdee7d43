import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller } from "../../auth/middleware.js";
import { HOST_TAG_MESSAGE, HOST_TAG_RE, MAX_HOST_TAGS } from "../../domain/host.js";
import { badRequest } from "../../errors.js";
import { TEMPLATE_NAME_RE } from "../../ids.js";
import type { SandboxRow, SandboxStatus } from "../../services/sandbox-access.js";
import type { SandboxService } from "../../services/sandboxes.js";
import { newRouter, type RouteModule } from "../app.js";
import { ENV_NAME_RE, errorResponses, SandboxIdParam, stringMap } from "../schemas.js";

const STATUSES = ["pending", "running", "paused", "stopped", "error", "missing"] as const;

export const SandboxSchema = z
  .object({
    id: z.string(),
    status: z.enum(STATUSES),
    template: z.string(),
    vcpus: z.number().int(),
    memory_mb: z.number().int(),
    disk_size_mb: z.number().int(),
    timeout_sec: z.number().int(),
    allow_internet_access: z.boolean(),
    metadata: z.record(z.string(), z.string()),
    host_id: z.string().nullable(),
    envd_version: z.string().nullable(),
    error: z.string().nullable(),
    created_at: z.string().openapi({ format: "date-time" }),
    started_at: z.string().nullable().openapi({ format: "date-time" }),
    last_active_at: z.string().nullable().openapi({ format: "date-time" }),
    ended_at: z.string().nullable().openapi({ format: "date-time" }),
  })
  .openapi("Sandbox");

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** The public view of a row: env vars and the envd token are never returned. */
export function sandboxView(r: SandboxRow): z.infer<typeof SandboxSchema> {
  return {
    id: r.id,
    status: r.status,
    template: r.template,
    vcpus: r.vcpus,
    memory_mb: r.memory_mb,
    disk_size_mb: r.disk_size_mb,
    timeout_sec: r.timeout_sec,
    allow_internet_access: r.allow_internet_access,
    metadata: r.metadata,
    host_id: r.host_id,
    envd_version: r.envd_version,
    error: r.error,
    created_at: r.created_at.toISOString(),
    started_at: iso(r.started_at),
    last_active_at: iso(r.last_active_at),
    ended_at: iso(r.ended_at),
  };
}

const CreateBody = z
  .object({
    template: z.string().regex(TEMPLATE_NAME_RE, "must be a template name").default("base"),
    vcpus: z.number().int().min(1).max(32).optional(),
    memory_mb: z.number().int().min(128).max(262144).optional(),
    disk_size_mb: z.number().int().min(1024).max(1048576).optional(),
    timeout_sec: z
      .number()
      .int()
      .min(0)
      .max(86400 * 30)
      .optional(),
    env_vars: stringMap(256, 32768)
      .refine(
        (m) => Object.keys(m).every((k) => ENV_NAME_RE.test(k)),
        "names must be [A-Za-z_][A-Za-z0-9_]*",
      )
      .optional(),
    metadata: stringMap(64, 1024).optional(),
    allow_internet_access: z.boolean().optional(),
    host_tags: z
      .array(z.string().regex(HOST_TAG_RE, HOST_TAG_MESSAGE))
      .max(MAX_HOST_TAGS)
      .optional()
      .openapi({ description: "place only on a host that has every one of these tags" }),
  })
  .strict()
  .openapi("CreateSandbox");

const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

/** Keyset cursor over (created_at, id): opaque to clients. */
const encodeCursor = (r: SandboxRow) =>
  Buffer.from(`${r.created_at.toISOString()}|${r.id}`).toString("base64url");
function decodeCursor(token: string): { createdAt: Date; id: string } {
  const [at, id] = Buffer.from(token, "base64url").toString().split("|");
  const createdAt = new Date(at ?? "");
  if (!id || Number.isNaN(createdAt.getTime()))
    throw badRequest("next_token is not valid", "next_token");
  return { createdAt, id };
}

/** `key=value` pairs joined by `&`, URL-encoded once more as a single query value (E2B style). */
function parseMetadataFilter(raw: string | undefined): Record<string, string> | undefined {
  if (!raw) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw)) out[k] = v;
  return out;
}

export function sandboxRoutes(service: SandboxService): RouteModule {
  return (deps) => {
    const r = newRouter();
    const auth = requireCaller(deps, { apiKey: true });
    r.use("/sandboxes", auth);
    r.use("/sandboxes/*", auth);

    r.openapi(
      createRoute({
        method: "post",
        path: "/sandboxes",
        summary: "Create a sandbox",
        tags: ["sandboxes"],
        request: { body: { ...json(CreateBody), required: true } },
        responses: { 201: { description: "Running", ...json(SandboxSchema) }, ...errorResponses },
      }),
      async (c) => {
        const b = c.req.valid("json");
        const row = await service.create(c.get("caller").teamId, {
          template: b.template,
          vcpus: b.vcpus,
          memoryMb: b.memory_mb,
          diskSizeMb: b.disk_size_mb,
          timeoutSec: b.timeout_sec,
          envVars: b.env_vars,
          metadata: b.metadata,
          allowInternetAccess: b.allow_internet_access,
          hostTags: b.host_tags,
        });
        return c.json(sandboxView(row), 201);
      },
    );

    r.openapi(
      createRoute({
        method: "get",
        path: "/sandboxes",
        summary: "List sandboxes (newest first)",
        tags: ["sandboxes"],
        request: {
          query: z.object({
            state: z
              .string()
              .regex(/^[a-z]+(,[a-z]+)*$/)
              .optional()
              .openapi({
                description: "Comma-separated statuses; default: all but stopped and error",
              }),
            metadata: z
              .string()
              .max(4096)
              .optional()
              .openapi({ description: "URL-encoded key=value&… pairs" }),
            id: z
              .string()
              .regex(/^[a-z0-9]{1,64}$/)
              .optional()
              .openapi({ description: "Only sandboxes whose id contains this (a-z, 0-9)" }),
            limit: z.coerce.number().int().min(1).max(1000).default(100),
            next_token: z.string().max(512).optional(),
          }),
        },
        responses: {
          200: {
            description: "A page",
            ...json(
              z.object({ sandboxes: z.array(SandboxSchema), next_token: z.string().nullable() }),
            ),
          },
          ...errorResponses,
        },
      }),
      async (c) => {
        const q = c.req.valid("query");
        const statuses = q.state
          ? q.state.split(",").map((s) => {
              if (!(STATUSES as readonly string[]).includes(s))
                throw badRequest(`unknown state ${s}`, "state");
              return s as SandboxStatus;
            })
          : (["pending", "running", "paused", "missing"] as SandboxStatus[]);
        const rows = await service.list({
          teamId: c.get("caller").teamId,
          statuses,
          metadata: parseMetadataFilter(q.metadata),
          idContains: q.id,
          after: q.next_token ? decodeCursor(q.next_token) : undefined,
          limit: q.limit + 1,
        });
        const page = rows.slice(0, q.limit);
        const last = page[page.length - 1];
        return c.json(
          {
            sandboxes: page.map(sandboxView),
            next_token: rows.length > q.limit && last ? encodeCursor(last) : null,
          },
          200,
        );
      },
    );

    r.openapi(
      createRoute({
        method: "get",
        path: "/sandboxes/{id}",
        summary: "Get a sandbox (any status, including stopped)",
        tags: ["sandboxes"],
        request: { params: SandboxIdParam },
        responses: {
          200: { description: "The sandbox", ...json(SandboxSchema) },
          ...errorResponses,
        },
      }),
      async (c) =>
        c.json(
          sandboxView(await service.get(c.get("caller").teamId, c.req.valid("param").id)),
          200,
        ),
    );

    r.openapi(
      createRoute({
        method: "delete",
        path: "/sandboxes/{id}",
        summary: "Destroy a sandbox (its row stays, as stopped)",
        tags: ["sandboxes"],
        request: { params: SandboxIdParam },
        responses: { 204: { description: "Destroyed" }, ...errorResponses },
      }),
      async (c) => {
        await service.destroy(c.get("caller").teamId, c.req.valid("param").id);
        return c.body(null, 204);
      },
    );

    r.openapi(
      createRoute({
        method: "post",
        path: "/sandboxes/{id}/pause",
        summary: "Pause, keeping memory",
        tags: ["sandboxes"],
        request: { params: SandboxIdParam },
        responses: { 200: { description: "Paused", ...json(SandboxSchema) }, ...errorResponses },
      }),
      async (c) =>
        c.json(
          sandboxView(await service.pause(c.get("caller").teamId, c.req.valid("param").id)),
          200,
        ),
    );

    r.openapi(
      createRoute({
        method: "post",
        path: "/sandboxes/{id}/resume",
        summary: "Resume a paused sandbox",
        tags: ["sandboxes"],
        request: {
          params: SandboxIdParam,
          body: {
            ...json(
              z
                .object({
                  timeout_sec: z
                    .number()
                    .int()
                    .min(0)
                    .max(86400 * 30)
                    .optional(),
                })
                .strict(),
            ),
            required: false,
          },
        },
        responses: { 200: { description: "Running", ...json(SandboxSchema) }, ...errorResponses },
      }),
      async (c) => {
        const body = c.req.header("content-type")?.includes("json") ? c.req.valid("json") : {};
        const row = await service.resume(
          c.get("caller").teamId,
          c.req.valid("param").id,
          body.timeout_sec,
        );
        return c.json(sandboxView(row), 200);
      },
    );

    r.openapi(
      createRoute({
        method: "post",
        path: "/sandboxes/{id}/timeout",
        summary: "Set the idle timeout (seconds; 0 = never auto-pause)",
        tags: ["sandboxes"],
        request: {
          params: SandboxIdParam,
          body: {
            ...json(
              z
                .object({
                  timeout_sec: z
                    .number()
                    .int()
                    .min(0)
                    .max(86400 * 30),
                })
                .strict(),
            ),
            required: true,
          },
        },
        responses: { 200: { description: "Updated", ...json(SandboxSchema) }, ...errorResponses },
      }),
      async (c) => {
        const row = await service.setTimeout(
          c.get("caller").teamId,
          c.req.valid("param").id,
          c.req.valid("json").timeout_sec,
        );
        return c.json(sandboxView(row), 200);
      },
    );

    r.openapi(
      createRoute({
        method: "post",
        path: "/sandboxes/{id}/ping",
        summary: "Count as activity (resets the idle timeout)",
        tags: ["sandboxes"],
        request: { params: SandboxIdParam },
        responses: { 204: { description: "Done" }, ...errorResponses },
      }),
      async (c) => {
        await service.ping(c.get("caller").teamId, c.req.valid("param").id);
        return c.body(null, 204);
      },
    );

    r.openapi(
      createRoute({
        method: "get",
        path: "/sandboxes/{id}/metrics",
        summary: "CPU, memory and disk samples",
        tags: ["sandboxes"],
        request: {
          params: SandboxIdParam,
          query: z.object({ range: z.enum(["10m", "2h", "24h"]).default("10m") }),
        },
        responses: {
          200: {
            description: "Samples, oldest first",
            ...json(
              z.object({
                sandbox_id: z.string(),
                range: z.string(),
                points: z.array(
                  z.object({
                    timestamp: z.string(),
                    cpu_pct: z.number(),
                    mem_bytes: z.number(),
                    disk_bytes: z.number(),
                  }),
                ),
              }),
            ),
          },
          ...errorResponses,
        },
      }),
      async (c) => {
        const { id } = c.req.valid("param");
        const { range } = c.req.valid("query");
        const points = await service.metrics(c.get("caller").teamId, id, range);
        return c.json(
          {
            sandbox_id: id,
            range,
            points: points.map((p) => ({ ...p, timestamp: p.timestamp.toISOString() })),
          },
          200,
        );
      },
    );
    return r;
  };
}
