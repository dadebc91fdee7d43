import { randomBytes } from "node:crypto";
import { type Context, Hono } from "hono";
import type { z } from "zod";
import type { AppDeps, AppEnv } from "../api/context.js";
import { requireCaller } from "../auth/middleware.js";
import type { SandboxRecord } from "../db/queries/sandboxes.js";
import { listTemplates, resolveTemplate } from "../db/queries/templates.js";
import type { SandboxStatus } from "../domain/sandbox.js";
import { badRequest, invalidState, notFound } from "../errors.js";
import { SANDBOX_ID_RE } from "../ids.js";
import type { SandboxLifecycle } from "../services/lifecycle.js";
import {
  type MetricRange,
  newAccessToken,
  SANDBOX_DEFAULTS,
  type SandboxService,
} from "../services/sandboxes.js";
import { E2bHttpError, e2bError, renderE2bError } from "./errors.js";
import {
  detailView,
  type E2bState,
  isVisible,
  listedView,
  metricViews,
  STATUSES_OF_STATE,
  sandboxView,
  templateView,
} from "./mapping.js";
import {
  ConnectBody,
  type NewSandboxBody,
  NewSandboxV1,
  NewSandboxV2,
  PauseBody,
  ResumeBody,
  TimeoutBody,
  unixSeconds,
} from "./schemas.js";

export interface E2bDeps extends AppDeps {
  sandboxes: SandboxService;
  lifecycle: SandboxLifecycle;
  platformTeamId: string;
}

type C = Context<AppEnv>;

/** The JSON body validated by `schema`; an empty body counts as `{}` unless one is required. */
async function jsonBody<T extends z.ZodType>(
  c: C,
  schema: T,
  required: boolean,
): Promise<z.infer<T>> {
  const text = await c.req.text();
  let value: unknown = {};
  if (text.trim()) {
    try {
      value = JSON.parse(text);
    } catch {
      throw badRequest("the request body is not valid JSON");
    }
  } else if (required) throw badRequest("a JSON request body is required");
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join(".");
    throw badRequest(
      issue ? `${field ? `${field}: ` : ""}${issue.message}` : "invalid request body",
      field,
    );
  }
  return parsed.data;
}

/**
 * The sandbox id of a path. Ids of SDK 1.x carry `-<clientID>`; E2B's API strips it too. An id
 * that cannot be a sandbox is simply not found (the SDKs expect 404, not 400).
 */
function pathId(c: C): string {
  const id = (c.req.param("id") ?? "").split("-")[0] ?? "";
  if (!SANDBOX_ID_RE.test(id)) throw notFound(`sandbox ${c.req.param("id")}`);
  return id;
}

const teamOf = (c: C) => c.get("caller").teamId;

/** Keyset cursor over (created_at, id), opaque to clients. */
const encodeCursor = (r: SandboxRecord) =>
  Buffer.from(`${r.created_at.toISOString()}|${r.id}`).toString("base64url");
function decodeCursor(token: string): { createdAt: Date; id: string } {
  const [at, id] = Buffer.from(token, "base64url").toString().split("|");
  const createdAt = new Date(at ?? "");
  if (!id || Number.isNaN(createdAt.getTime())) throw badRequest("nextToken is not valid");
  return { createdAt, id };
}

/**
 * The `metadata` list filter: `URLSearchParams({k: v})` whose keys and values the SDK has
 * URL-encoded once before (so they are decoded twice, as E2B's API does).
 */
function metadataFilter(raw: string | undefined): Record<string, string> | undefined {
  if (!raw) return undefined;
  const out: Record<string, string> = {};
  try {
    for (const [k, v] of new URLSearchParams(raw))
      out[decodeURIComponent(k)] = decodeURIComponent(v);
  } catch {
    throw badRequest("metadata: not URL-encoded key=value pairs");
  }
  return out;
}

/** `state=running,paused` (comma-joined, or the parameter repeated). */
function stateFilter(values: string[] | undefined, fallback: readonly E2bState[]): SandboxStatus[] {
  const states = (values ?? []).flatMap((v) => v.split(",")).filter(Boolean);
  const wanted = states.length ? states : fallback;
  return wanted.flatMap((s) => {
    if (s !== "running" && s !== "paused")
      throw badRequest(`state: unknown state ${s} (running or paused)`);
    return [...STATUSES_OF_STATE[s]];
  });
}

/** The smallest metric tier of the agent that reaches back to `since`. */
function rangeSince(since: Date): MetricRange {
  const age = Date.now() - since.getTime();
  if (age <= 10 * 60_000) return "10m";
  if (age <= 2 * 3600_000) return "2h";
  return "24h";
}

/**
 * The E2B REST API (e2b-compat §2), mounted at the root next to /v1, on the same service layer:
 * a sandbox made through either face is visible and controllable through the other. Plain Hono
 * routes, so /v1's OpenAPI document stays Nestbox's own.
 */
export function e2bRoutes(deps: E2bDeps): Hono<AppEnv> {
  const { sandboxes, lifecycle, config } = deps;
  const domain = config.domain;
  const app = new Hono<AppEnv>();
  app.onError(renderE2bError);

  const auth = requireCaller(deps, { apiKey: true });
  for (const path of ["/sandboxes", "/sandboxes/*", "/v2/*", "/templates", "/templates/*"])
    app.use(path, auth);

  /** A sandbox of the caller's team that E2B can see (not stopped or failed), else 404. */
  const visible = async (c: C, id: string): Promise<SandboxRecord> => {
    const row = await sandboxes.get(teamOf(c), id);
    if (!isVisible(row)) throw notFound(`sandbox ${id}`);
    return row;
  };

  const create = (version: 1 | 2) => async (c: C) => {
    const b: NewSandboxBody = await jsonBody(c, version === 1 ? NewSandboxV1 : NewSandboxV2, true);
    // The v1 body's timeout defaults to 15 s in E2B's spec (SDKs always send it); v2's to 300.
    const endInSec = b.timeout ?? (version === 1 ? 15 : 300);
    const allowPublicTraffic = b.network?.allowPublicTraffic ?? true;
    const denyAll = b.network?.denyOut?.some((cidr) => cidr === "0.0.0.0/0") ?? false;
    const row = await sandboxes.create(teamOf(c), {
      template: b.templateID ?? "base",
      // The end time is absolute and kept by the control plane: no idle TTL on the host.
      timeoutSec: 0,
      endInSec,
      onTimeout: b.autoPause ? "pause" : "kill",
      autoResume: b.autoResume?.enabled ?? false,
      envVars: b.envVars ?? undefined,
      metadata: b.metadata ?? undefined,
      allowInternetAccess: b.allow_internet_access ?? !denyAll,
      // v2 sandboxes are always secured; v1 ones when asked (SDKs 2.x always ask).
      envdAccessToken: version === 2 || b.secure ? newAccessToken() : undefined,
      allowPublicTraffic,
      trafficAccessToken: allowPublicTraffic ? undefined : randomBytes(20).toString("hex"),
    });
    return c.json(sandboxView(row, domain), 201);
  };
  app.post("/sandboxes", create(1));
  app.post("/v2/sandboxes", create(2));

  const list = (fallbackStates: readonly E2bState[], defaultLimit: number) => async (c: C) => {
    const limitRaw = c.req.query("limit");
    const limit = limitRaw === undefined || limitRaw === "" ? defaultLimit : Number(limitRaw);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw badRequest("limit: must be a whole number from 1 to 1000");
    const order = c.req.query("order") ?? "desc";
    if (order !== "asc" && order !== "desc") throw badRequest("order: must be asc or desc");
    const startedAfterRaw = c.req.query("startedAfter");
    const startedAfter = startedAfterRaw ? new Date(startedAfterRaw) : undefined;
    if (startedAfter && Number.isNaN(startedAfter.getTime()))
      throw badRequest("startedAfter: must be an RFC 3339 time");
    const nextToken = c.req.query("nextToken");
    const rows = await sandboxes.list({
      teamId: teamOf(c),
      statuses: stateFilter(c.req.queries("state"), fallbackStates),
      metadata: metadataFilter(c.req.query("metadata")),
      template: c.req.query("template") || undefined,
      startedAfter,
      order,
      after: nextToken ? decodeCursor(nextToken) : undefined,
      limit: limit + 1,
    });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    if (rows.length > limit && last) c.header("X-Next-Token", encodeCursor(last));
    return c.json(page.map(listedView), 200);
  };
  // SDK 1.x lists running sandboxes; the v2 list shows paused ones too unless asked otherwise.
  app.get("/sandboxes", list(["running"], 1000));
  app.get("/v2/sandboxes", list(["running", "paused"], 100));

  app.get("/sandboxes/:id", async (c) =>
    c.json(detailView(await visible(c, pathId(c)), domain), 200),
  );

  app.delete("/sandboxes/:id", async (c) => {
    const id = pathId(c);
    await visible(c, id);
    await sandboxes.destroy(teamOf(c), id);
    return c.body(null, 204);
  });

  app.post("/sandboxes/:id/timeout", async (c) => {
    const id = pathId(c);
    const { timeout } = await jsonBody(c, TimeoutBody, true);
    await lifecycle.endIn(teamOf(c), id, timeout);
    return c.body(null, 204);
  });

  app.post("/sandboxes/:id/pause", async (c) => {
    const id = pathId(c);
    await jsonBody(c, PauseBody, false);
    const row = await visible(c, id);
    if (row.status === "paused") throw invalidState(`sandbox ${id} is already paused`);
    await sandboxes.pause(teamOf(c), id);
    return c.body(null, 204);
  });

  const connect = async (c: C) => {
    const id = pathId(c);
    const b = await jsonBody(c, ConnectBody, false);
    const { sandbox, resumed } = await lifecycle.keepRunning(teamOf(c), id, b.timeout ?? 300);
    return c.json(sandboxView(sandbox, domain), resumed ? 201 : 200);
  };
  app.post("/sandboxes/:id/connect", connect);
  app.post("/v2/sandboxes/:id/connect", connect);

  app.post("/sandboxes/:id/resume", async (c) => {
    const id = pathId(c);
    const b = await jsonBody(c, ResumeBody, false);
    await visible(c, id);
    const row = await lifecycle.resume(teamOf(c), id, b.timeout ?? 15);
    return c.json(sandboxView(row, domain), 201);
  });

  app.get("/sandboxes/:id/metrics", async (c) => {
    const id = pathId(c);
    const parse = (name: "start" | "end") => {
      const raw = c.req.query(name);
      if (raw === undefined || raw === "") return undefined;
      const r = unixSeconds.safeParse(raw);
      if (!r.success) throw badRequest(`${name}: must be a Unix time in seconds`);
      return new Date(r.data * 1000);
    };
    const row = await visible(c, id);
    const start = parse("start") ?? row.started_at ?? row.created_at;
    const end = parse("end") ?? new Date();
    const points = await sandboxes.metrics(teamOf(c), id, rangeSince(start));
    const inRange = points.filter(
      (p) =>
        p.timestamp.getTime() >= Math.floor(start.getTime() / 1000) * 1000 &&
        p.timestamp.getTime() <= end.getTime(),
    );
    return c.json(metricViews(row, inRange), 200);
  });

  // Optional SDK features Nestbox does not implement: a clear error, not "sandbox not found".
  const unsupported = (what: string) => async (c: C) => {
    await visible(c, pathId(c));
    throw new E2bHttpError(501, `${what} is not supported by Nestbox`);
  };
  app.put("/sandboxes/:id/network", unsupported("updating the network of a sandbox"));
  app.post("/sandboxes/:id/fork", unsupported("forking a sandbox"));
  app.post("/sandboxes/:id/snapshots", unsupported("snapshots through the E2B API"));

  const templateDefaults = {
    vcpus: SANDBOX_DEFAULTS.vcpus,
    memoryMb: SANDBOX_DEFAULTS.memoryMb,
    diskSizeMb: SANDBOX_DEFAULTS.diskSizeMb,
  };
  app.get("/templates", async (c) => {
    const rows = await listTemplates(deps.db, teamOf(c), deps.platformTeamId);
    return c.json(
      rows.map((t) => templateView(t, deps.platformTeamId, templateDefaults)),
      200,
    );
  });
  const oneTemplate = async (c: C, name: string) => {
    const t = await resolveTemplate(deps.db, teamOf(c), deps.platformTeamId, name);
    if (!t) throw notFound(`template ${name}`);
    return templateView(t, deps.platformTeamId, templateDefaults);
  };
  app.get("/templates/aliases/:alias", async (c) => {
    const t = await oneTemplate(c, c.req.param("alias"));
    return c.json({ templateID: t.templateID, public: t.public }, 200);
  });
  app.get("/templates/:id", async (c) => {
    const t = await oneTemplate(c, c.req.param("id"));
    return c.json({ ...t, builds: [] }, 200);
  });

  // Anything else under the E2B prefixes still answers in E2B's error shape.
  for (const path of ["/sandboxes/*", "/v2/*", "/templates/*"])
    app.all(path, (c) =>
      c.json(e2bError(404, `no such route: ${c.req.method} ${c.req.path}`), 404),
    );
  return app;
}
