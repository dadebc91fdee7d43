import { z } from "@hono/zod-openapi";
import type { HostDetail } from "../../db/queries/hosts.js";
import { HOST_TAG_MESSAGE, HOST_TAG_RE } from "../../domain/host.js";
import type { HostCredentials } from "../../hosts/registration.js";
import type { IssuedCertificate } from "../../pki/ca.js";
import { ErrorSchema } from "../schemas.js";

/** Schemas and views of the host routes (hosts.ts for users, host-agent-routes.ts for agents). */

export const HOST_ID_RE = /^host_[a-z0-9]{20}$/;
export const OPAQUE_TOKEN = z
  .string()
  .regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex characters");

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

export const FACTS = {
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

/** What a heartbeat reports about the resources the agent has committed right now. */
export const USAGE = {
  used_memory_mb: count(Number.MAX_SAFE_INTEGER).openapi({
    description: "memory promised to its sandboxes that are not paused",
  }),
  used_disk_mb: count(Number.MAX_SAFE_INTEGER).openapi({
    description: "disk sizes of all its sandboxes",
  }),
  sandbox_count: count(1_000_000),
};

export const HostTag = z.string().regex(HOST_TAG_RE, HOST_TAG_MESSAGE).openapi({ example: "gpu" });

export const HostSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    type: z.enum(["regular", "byoc"]),
    team_id: z.string().nullable().openapi({ description: "the owning team of a byoc host" }),
    team_name: z.string().nullable(),
    status: z.enum(["pending", "online", "unreachable", "offline"]),
    draining: z.boolean().openapi({ description: "no new sandboxes are placed here" }),
    tags: z.array(z.string()).openapi({ description: "sorted" }),
    active_sandbox_count: z
      .number()
      .int()
      .openapi({ description: "its sandboxes that are pending, running, paused or missing" }),
    address: z.string().nullable(),
    runtime: z.string().nullable(),
    arch: z.string().nullable(),
    cpu_cores: z.number().int().nullable(),
    memory_mb: z.number().int().nullable(),
    disk_mb: z.number().int().nullable(),
    used_memory_mb: z
      .number()
      .int()
      .nullable()
      .openapi({ description: "reported by its agent with the last heartbeat" }),
    used_disk_mb: z.number().int().nullable(),
    sandbox_count: z.number().int().nullable(),
    agent_version: z.string().nullable(),
    last_heartbeat_at: z.string().nullable(),
    created_by: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Host");

export type HostView = z.infer<typeof HostSchema>;

export const CredentialsSchema = z
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
export const CSR = z
  .string()
  .max(16_384)
  .regex(/^-----BEGIN CERTIFICATE REQUEST-----/, "must be a PEM certificate request")
  .openapi({ description: "PEM PKCS#10 request, ECDSA P-256 key" });

export const HostIdParam = z.object({
  id: z
    .string()
    .regex(HOST_ID_RE, "must be a host id (host_ + 20 characters a-z, 0-9)")
    .openapi({ param: { name: "id", in: "path" }, example: "host_k3j4h5g6f7d8s9a0q1w2" }),
});

export const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

export const responses403 = {
  403: { description: "Not allowed", ...json(ErrorSchema) },
} as const;

export const hostView = (h: HostDetail): HostView => ({
  id: h.id,
  name: h.name,
  type: h.type,
  team_id: h.team_id,
  team_name: h.team_name,
  status: h.status,
  draining: h.draining,
  tags: h.tags,
  active_sandbox_count: h.active_sandbox_count,
  address: h.address,
  runtime: h.runtime,
  arch: h.arch,
  cpu_cores: h.cpu_cores,
  memory_mb: h.memory_mb,
  disk_mb: h.disk_mb,
  used_memory_mb: h.used_memory_mb,
  used_disk_mb: h.used_disk_mb,
  sandbox_count: h.sandbox_count,
  agent_version: h.agent_version,
  last_heartbeat_at: h.last_heartbeat_at?.toISOString() ?? null,
  created_by: h.created_by,
  created_at: h.created_at.toISOString(),
  updated_at: h.updated_at.toISOString(),
});

export const credentialsView = (
  c: HostCredentials,
  host: HostDetail,
  cert: IssuedCertificate,
  caPem: string,
): z.infer<typeof CredentialsSchema> => ({
  host: hostView(host),
  certificate: cert.certificatePem,
  certificate_expires_at: cert.notAfter.toISOString(),
  ca_certificate: caPem,
  host_token: c.hostToken,
  host_token_expires_at: c.hostTokenExpiresAt.toISOString(),
  refresh_token: c.refreshToken,
  refresh_token_expires_at: c.refreshTokenExpiresAt.toISOString(),
});
