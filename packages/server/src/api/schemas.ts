import { z } from "@hono/zod-openapi";
import { SANDBOX_ID_RE } from "../ids.js";

/** Shared OpenAPI schemas of /v1. */
export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: "not_found" }),
      message: z.string(),
      field: z.string().optional(),
    }),
  })
  .openapi("Error");

export const errorResponses = {
  400: { description: "Invalid input", content: { "application/json": { schema: ErrorSchema } } },
  401: {
    description: "Missing or invalid credentials",
    content: { "application/json": { schema: ErrorSchema } },
  },
  404: {
    description: "Not found (or not in your team)",
    content: { "application/json": { schema: ErrorSchema } },
  },
  409: { description: "Wrong state", content: { "application/json": { schema: ErrorSchema } } },
  503: {
    description: "No host available or host unreachable",
    content: { "application/json": { schema: ErrorSchema } },
  },
} as const;

export const SandboxIdParam = z.object({
  id: z
    .string()
    .regex(SANDBOX_ID_RE, "must be a sandbox id (20 characters a-z, 0-9)")
    .openapi({ param: { name: "id", in: "path" }, example: "k3j4h5g6f7d8s9a0q1w2" }),
});

/** String maps (env vars, metadata): bounded so one request cannot store megabytes. */
export const stringMap = (maxEntries: number, maxValue: number) =>
  z
    .record(z.string().min(1).max(256), z.string().max(maxValue))
    .refine((m) => Object.keys(m).length <= maxEntries, `at most ${maxEntries} entries`);

export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
