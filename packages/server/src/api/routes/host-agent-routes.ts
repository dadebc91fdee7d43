import type { OpenAPIHono } from "@hono/zod-openapi";
import { createRoute, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { getHostDetail } from "../../db/queries/hosts.js";
import { ApiError, forbidden, unauthorized } from "../../errors.js";
import {
  authenticateHost,
  heartbeat,
  refreshHostToken,
  registerHost,
} from "../../hosts/registration.js";
import {
  CertificateAuthority,
  CertificateRequestError,
  type CheckedRequest,
} from "../../pki/ca.js";
import type { AppDeps, AppEnv } from "../context.js";
import { errorResponses } from "../schemas.js";
import {
  CredentialsSchema,
  CSR,
  credentialsView,
  FACTS,
  HostIdParam,
  json,
  OPAQUE_TOKEN,
  responses403,
  USAGE,
} from "./host-schemas.js";

/** The CA and the agent's checked certificate request; 400 for a bad request. */
async function checkedRequest(
  deps: AppDeps,
  csrPem: string,
): Promise<{ ca: CertificateAuthority; req: CheckedRequest }> {
  const ca = deps.agents.identity?.ca;
  if (!ca)
    throw new ApiError(503, "pki_unavailable", "this control plane cannot issue host certificates");
  try {
    return { ca, req: await CertificateAuthority.checkRequest(csrPem) };
  } catch (err) {
    if (err instanceof CertificateRequestError)
      throw new ApiError(400, "invalid_csr", err.message, { field: "csr" });
    throw err;
  }
}

/**
 * Host-agent calls carry `X-Host-Token` (a host JWT). It must name the host in the path: an
 * agent can only speak for itself.
 */
function requireHostToken(deps: AppDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const token = c.req.header("x-host-token");
    if (!token) throw unauthorized("X-Host-Token header required");
    const hostId = await authenticateHost(deps.config.jwtSecret, token);
    if (hostId !== c.req.param("id")) throw forbidden("host token belongs to another host");
    await next();
  };
}

async function detail(deps: AppDeps, id: string) {
  const host = await getHostDetail(deps.db, id);
  // Deleted between the token's use and this read: the agent's next heartbeat gets 404.
  if (!host) throw new ApiError(404, "not_found", "host not found");
  return host;
}

/**
 * What host agents call: register with a one-time token, refresh their credentials (a new
 * certificate each time), heartbeat with their facts and the resources they have committed.
 */
export function addHostAgentRoutes(r: OpenAPIHono<AppEnv>, deps: AppDeps): void {
  const { db } = deps;
  const secret = deps.config.jwtSecret;
  r.openAPIRegistry.registerComponent("securitySchemes", "hostToken", {
    type: "apiKey",
    in: "header",
    name: "X-Host-Token",
  });

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts/register",
      summary: "Host agent: exchange a registration token for credentials",
      tags: ["hosts"],
      request: {
        body: {
          ...json(z.object({ token: OPAQUE_TOKEN, csr: CSR, ...FACTS }).strict()),
          required: true,
        },
      },
      responses: {
        201: {
          description: "Registered; the host is online with its first heartbeat",
          ...json(CredentialsSchema),
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      // Checked before the one-time token is spent on it.
      const { ca, req } = await checkedRequest(deps, b.csr);
      const creds = await registerHost(db, secret, {
        token: b.token,
        address: b.address,
        runtime: b.runtime,
        arch: b.arch,
        cpuCores: b.cpu_cores,
        memoryMb: b.memory_mb,
        diskMb: b.disk_mb,
        agentVersion: b.agent_version,
      });
      const cert = await ca.issueHostCertificate(req, creds.host.id, b.address);
      const host = await detail(deps, creds.host.id);
      return c.json(credentialsView(creds, host, cert, ca.certificatePem), 201);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts/auth/refresh",
      summary: "Host agent: trade a refresh token (used once) for new credentials",
      tags: ["hosts"],
      request: {
        body: {
          ...json(z.object({ refresh_token: OPAQUE_TOKEN, csr: CSR }).strict()),
          required: true,
        },
      },
      responses: {
        200: { description: "New credentials", ...json(CredentialsSchema) },
        ...errorResponses,
      },
    }),
    async (c) => {
      const b = c.req.valid("json");
      const { ca, req } = await checkedRequest(deps, b.csr);
      const creds = await refreshHostToken(db, secret, b.refresh_token);
      if (!creds.host.address) throw new ApiError(409, "invalid_state", "the host has no address");
      const cert = await ca.issueHostCertificate(req, creds.host.id, creds.host.address);
      const host = await detail(deps, creds.host.id);
      return c.json(credentialsView(creds, host, cert, ca.certificatePem), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts/{id}/heartbeat",
      summary:
        "Host agent: I am alive (every 30 s), with what I have committed and optionally updated facts",
      tags: ["hosts"],
      security: [{ hostToken: [] }],
      middleware: [requireHostToken(deps)],
      request: {
        params: HostIdParam,
        body: {
          ...json(
            z
              .object({ ...FACTS, ...USAGE })
              .partial()
              .strict()
              .refine(
                (b) =>
                  [b.used_memory_mb, b.used_disk_mb, b.sandbox_count].every(
                    (v) => v === undefined,
                  ) ||
                  [b.used_memory_mb, b.used_disk_mb, b.sandbox_count].every((v) => v !== undefined),
                "used_memory_mb, used_disk_mb and sandbox_count come together",
              ),
          ),
          required: false,
        },
      },
      responses: {
        204: { description: "Recorded" },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const f = c.req.valid("json");
      await heartbeat(
        db,
        c.req.valid("param").id,
        {
          address: f.address,
          runtime: f.runtime,
          arch: f.arch,
          cpuCores: f.cpu_cores,
          memoryMb: f.memory_mb,
          diskMb: f.disk_mb,
          agentVersion: f.agent_version,
        },
        f.used_memory_mb !== undefined &&
          f.used_disk_mb !== undefined &&
          f.sandbox_count !== undefined
          ? {
              usedMemoryMb: f.used_memory_mb,
              usedDiskMb: f.used_disk_mb,
              sandboxCount: f.sandbox_count,
            }
          : undefined,
      );
      return c.body(null, 204);
    },
  );
}
