import { createRoute, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { requireAdmin, userCaller } from "../../auth/middleware.js";
import { deleteHost, getHost, type HostRow, listHosts } from "../../db/queries/hosts.js";
import { ApiError, forbidden, notFound, unauthorized } from "../../errors.js";
import {
  authenticateHost,
  createHost,
  type HostCredentials,
  heartbeat,
  refreshHostToken,
  registerHost,
} from "../../hosts/registration.js";
import {
  CertificateAuthority,
  CertificateRequestError,
  type CheckedRequest,
  type IssuedCertificate,
} from "../../pki/ca.js";
import { newRouter } from "../app.js";
import type { AppDeps, AppEnv } from "../context.js";
import { ErrorSchema, errorResponses } from "../schemas.js";

const HOST_ID_RE = /^host_[a-z0-9]{20}$/;
const OPAQUE_TOKEN = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex characters");

/** Non-negative integers that fit the column (cpu_cores is int4; the rest int8 but JS-safe). */
const count = (max: number) =>
  z.number().int("must be an integer").min(0, "must not be negative").max(max);

/**
 * The agent's base URL: https only (agents serve over mutual TLS), no credentials, query or
 * fragment; no trailing slash.
 */
const AgentAddress = z
  .string()
  .max(2048)
  .refine((s) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      // Not a URL at all: the refine's message says what is expected.
      return false;
    }
    return (
      u.protocol === "https:" &&
      u.hostname !== "" &&
      u.username === "" &&
      u.password === "" &&
      u.search === "" &&
      u.hash === ""
    );
  }, "must be an https:// URL without credentials, query or fragment (agents serve over TLS)")
  .transform((s) => s.replace(/\/+$/, ""));

const FACTS = {
  address: AgentAddress.openapi({ example: "https://10.0.0.5:50051" }),
  runtime: z.enum(["qemu", "namespace"]),
  arch: z.string().regex(/^[a-z0-9_]{1,32}$/, "must be 1-32 characters a-z, 0-9, _"),
  cpu_cores: count(1_000_000),
  memory_mb: count(Number.MAX_SAFE_INTEGER),
  disk_mb: count(Number.MAX_SAFE_INTEGER),
  agent_version: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/, "must be 1-64 characters A-Z, a-z, 0-9, . + _ -"),
};

const HostSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    status: z.enum(["pending", "online", "unreachable", "offline"]),
    address: z.string().nullable(),
    runtime: z.string().nullable(),
    arch: z.string().nullable(),
    cpu_cores: z.number().int().nullable(),
    memory_mb: z.number().int().nullable(),
    disk_mb: z.number().int().nullable(),
    agent_version: z.string().nullable(),
    last_heartbeat_at: z.string().nullable(),
    created_by: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Host");

const CredentialsSchema = z
  .object({
    host: HostSchema,
    host_token: z.string().openapi({ description: "JWT for X-Host-Token; 24 h" }),
    host_token_expires_at: z.string(),
    refresh_token: z.string().openapi({ description: "one use; 30 days" }),
    refresh_token_expires_at: z.string(),
    certificate: z.string().openapi({
      description: "PEM: the host's server certificate (7 days), for the key of its csr",
    }),
    certificate_expires_at: z.string(),
    ca_certificate: z.string().openapi({
      description: "PEM: the control plane's CA; the agent accepts only clients it signed",
    }),
  })
  .openapi("HostCredentials");

/** A PKCS#10 request for the agent's own key (which never leaves the host). */
const CSR = z
  .string()
  .max(16_384)
  .regex(/^-----BEGIN CERTIFICATE REQUEST-----/, "must be a PEM certificate request")
  .openapi({ description: "PEM PKCS#10 request, ECDSA P-256 key" });

const HostIdParam = z.object({
  id: z
    .string()
    .regex(HOST_ID_RE, "must be a host id (host_ + 20 characters a-z, 0-9)")
    .openapi({ param: { name: "id", in: "path" }, example: "host_k3j4h5g6f7d8s9a0q1w2" }),
});

const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

const responses403 = {
  403: { description: "Not allowed", ...json(ErrorSchema) },
} as const;

export const hostView = (h: HostRow): z.infer<typeof HostSchema> => ({
  id: h.id,
  name: h.name,
  status: h.status,
  address: h.address,
  runtime: h.runtime,
  arch: h.arch,
  cpu_cores: h.cpu_cores,
  memory_mb: h.memory_mb,
  disk_mb: h.disk_mb,
  agent_version: h.agent_version,
  last_heartbeat_at: h.last_heartbeat_at?.toISOString() ?? null,
  created_by: h.created_by,
  created_at: h.created_at.toISOString(),
  updated_at: h.updated_at.toISOString(),
});

const credentialsView = (
  c: HostCredentials,
  cert: IssuedCertificate,
  caPem: string,
): z.infer<typeof CredentialsSchema> => ({
  host: hostView(c.host),
  certificate: cert.certificatePem,
  certificate_expires_at: cert.notAfter.toISOString(),
  ca_certificate: caPem,
  host_token: c.hostToken,
  host_token_expires_at: c.hostTokenExpiresAt.toISOString(),
  refresh_token: c.refreshToken,
  refresh_token_expires_at: c.refreshTokenExpiresAt.toISOString(),
});

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

/**
 * Hosts: admins create them (getting a one-time registration token), list and delete them;
 * host agents register with that token, refresh their credentials and send heartbeats.
 */
export function hostRoutes(deps: AppDeps) {
  const r = newRouter();
  const admin = requireAdmin(deps);
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
      path: "/hosts",
      summary: "Create a host and its one-time registration token (admin)",
      tags: ["hosts"],
      security: [{ bearer: [] }],
      middleware: [admin],
      request: {
        body: {
          ...json(
            z
              .object({
                name: z
                  .string()
                  .regex(
                    /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
                    "must be 1-63 characters A-Z, a-z, 0-9, . _ - (starting with a letter or digit)",
                  ),
              })
              .strict(),
          ),
          required: true,
        },
      },
      responses: {
        201: {
          description: "Created; the registration token is shown only here and works once, for 1 h",
          ...json(z.object({ host: HostSchema, registration_token: z.string() })),
        },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const { host, registrationToken } = await createHost(db, {
        name: c.req.valid("json").name,
        createdBy: userCaller(c).userId,
      });
      return c.json({ host: hostView(host), registration_token: registrationToken }, 201);
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/hosts",
      summary: "All hosts (admin)",
      tags: ["hosts"],
      security: [{ bearer: [] }],
      middleware: [admin],
      responses: {
        200: { description: "Hosts", ...json(z.object({ hosts: z.array(HostSchema) })) },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => c.json({ hosts: (await listHosts(db)).map(hostView) }, 200),
  );

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
      return c.json(credentialsView(creds, cert, ca.certificatePem), 201);
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
      return c.json(credentialsView(creds, cert, ca.certificatePem), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/hosts/{id}",
      summary: "One host (admin)",
      tags: ["hosts"],
      security: [{ bearer: [] }],
      middleware: [admin],
      request: { params: HostIdParam },
      responses: {
        200: { description: "The host", ...json(HostSchema) },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const host = await getHost(db, c.req.valid("param").id);
      if (!host) throw notFound("host");
      return c.json(hostView(host), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/hosts/{id}",
      summary: "Delete a host (admin); 409 while it has live sandboxes unless force=true",
      tags: ["hosts"],
      security: [{ bearer: [] }],
      middleware: [admin],
      request: {
        params: HostIdParam,
        query: z.object({
          force: z.enum(["true", "false"], { error: "must be true or false" }).optional().openapi({
            description:
              "mark its live sandboxes stopped, delete anyway, and tell its agent to destroy them and exit",
          }),
        }),
      },
      responses: {
        204: { description: "Deleted" },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const force = c.req.valid("query").force === "true";
      // Read before the delete: its address is needed to stop its agent afterwards.
      const host = force ? await getHost(db, id) : undefined;
      const res = await deleteHost(db, id, force);
      if (res === "not_found") throw notFound("host");
      // The rows are already consistent (sandboxes stopped, host gone); what still runs on the
      // host is destroyed by its agent's Terminate, so no VM outlives its database row.
      if (res === "deleted" && host?.address) await deps.agents.terminate(id, host.address);
      else if (res === "deleted") deps.agents.forget(id);
      if (res !== "deleted") {
        throw new ApiError(
          409,
          "conflict",
          `host has ${res.liveSandboxIds.length} live sandbox(es); destroy them or pass force=true`,
          { sandbox_ids: res.liveSandboxIds },
        );
      }
      return c.body(null, 204);
    },
  );

  r.openapi(
    createRoute({
      method: "post",
      path: "/hosts/{id}/heartbeat",
      summary: "Host agent: I am alive (optionally with updated facts about the host)",
      tags: ["hosts"],
      security: [{ hostToken: [] }],
      middleware: [requireHostToken(deps)],
      request: {
        params: HostIdParam,
        body: { ...json(z.object(FACTS).partial().strict()), required: false },
      },
      responses: {
        204: { description: "Recorded" },
        ...errorResponses,
        ...responses403,
      },
    }),
    async (c) => {
      const f = c.req.valid("json");
      await heartbeat(db, c.req.valid("param").id, {
        address: f.address,
        runtime: f.runtime,
        arch: f.arch,
        cpuCores: f.cpu_cores,
        memoryMb: f.memory_mb,
        diskMb: f.disk_mb,
        agentVersion: f.agent_version,
      });
      return c.body(null, 204);
    },
  );

  return r;
}
