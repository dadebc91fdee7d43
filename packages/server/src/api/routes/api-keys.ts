import { createRoute, z } from "@hono/zod-openapi";
import { forgetRecentApiKeys, generateApiKey } from "../../auth/api-keys.js";
import { requireCaller } from "../../auth/middleware.js";
import {
  type ApiKeyRow,
  insertApiKey,
  listApiKeys,
  revokeApiKey,
} from "../../db/queries/api-keys.js";
import { recordAudit } from "../../db/queries/audit.js";
import { notFound } from "../../errors.js";
import { newId } from "../../ids.js";
import { newRouter, type RouteModule } from "../app.js";
import type { AppDeps, Caller } from "../context.js";
import { errorResponses } from "../schemas.js";
import { forbiddenResponse, idParam, json } from "./auth-schemas.js";

const ApiKeySchema = z
  .object({
    id: z.string(),
    name: z.string(),
    /** First 8 hex characters after `nbx_`, to tell keys apart. */
    key_prefix: z.string(),
    created_by: z.string().nullable(),
    created_at: z.string().openapi({ format: "date-time" }),
    last_used_at: z.string().nullable().openapi({ format: "date-time" }),
  })
  .openapi("ApiKey");

const CreatedApiKeySchema = z
  .object({
    id: z.string(),
    name: z.string(),
    /** The whole key. It is shown only in this response; only its hash is stored. */
    key: z.string().openapi({ example: `nbx_${"0".repeat(40)}` }),
    key_prefix: z.string(),
    created_at: z.string().openapi({ format: "date-time" }),
  })
  .openapi("CreatedApiKey");

const CreateBody = z
  .object({ name: z.string().trim().min(1).max(100).openapi({ example: "ci" }) })
  .openapi("CreateApiKey");

const KeyParams = z.object({ id: idParam("key") });

const keyView = (k: ApiKeyRow): z.infer<typeof ApiKeySchema> => ({
  id: k.id,
  name: k.name,
  key_prefix: k.key_prefix,
  created_by: k.created_by,
  created_at: k.created_at.toISOString(),
  last_used_at: k.last_used_at ? k.last_used_at.toISOString() : null,
});

const actorOf = (caller: Caller) =>
  caller.kind === "user"
    ? ({ actorType: "user", actorId: caller.userId } as const)
    : ({ actorType: "api_key", actorId: caller.keyId } as const);

const keyErrors = {
  400: errorResponses[400],
  401: errorResponses[401],
  ...forbiddenResponse,
} as const;

/** The caller's team's API keys; both user sessions and API keys may manage them. */
export function apiKeyRoutes(deps: AppDeps) {
  const r = newRouter();
  const auth = requireCaller(deps, { apiKey: true });
  r.use("/api-keys", auth);
  r.use("/api-keys/*", auth);
  const security: { [scheme: string]: string[] }[] = [{ apiKey: [] }, { bearer: [] }];

  r.openapi(
    createRoute({
      method: "post",
      path: "/api-keys",
      summary: "Create an API key for the caller's team (the key is shown once)",
      tags: ["api-keys"],
      security,
      request: { body: { ...json(CreateBody), required: true } },
      responses: { 201: { description: "Created", ...json(CreatedApiKeySchema) }, ...keyErrors },
    }),
    async (c) => {
      const caller = c.get("caller");
      const { name } = c.req.valid("json");
      const material = generateApiKey();
      const row = await insertApiKey(deps.db, {
        id: newId("key"),
        team_id: caller.teamId,
        name,
        key_hash: material.keyHash,
        key_prefix: material.keyPrefix,
        // A key made with a key is attributed to the person behind the key that made it.
        created_by: caller.kind === "user" ? caller.userId : caller.createdBy,
      });
      await recordAudit(deps.db, {
        teamId: caller.teamId,
        ...actorOf(caller),
        action: "api_key.create",
        resourceType: "api_key",
        resourceId: row.id,
        metadata: { name, key_prefix: row.key_prefix },
      });
      return c.json(
        {
          id: row.id,
          name: row.name,
          key: material.key,
          key_prefix: row.key_prefix,
          created_at: row.created_at.toISOString(),
        },
        201,
      );
    },
  );

  r.openapi(
    createRoute({
      method: "get",
      path: "/api-keys",
      summary: "The team's live API keys, newest first (never the secrets)",
      tags: ["api-keys"],
      security,
      responses: { 200: { description: "Keys", ...json(z.array(ApiKeySchema)) }, ...keyErrors },
    }),
    async (c) => {
      const keys = await listApiKeys(deps.db, c.get("caller").teamId);
      return c.json(keys.map(keyView), 200);
    },
  );

  r.openapi(
    createRoute({
      method: "delete",
      path: "/api-keys/{id}",
      summary: "Revoke an API key of the team",
      tags: ["api-keys"],
      security,
      request: { params: KeyParams },
      responses: {
        204: { description: "Revoked" },
        ...keyErrors,
        404: errorResponses[404],
      },
    }),
    async (c) => {
      const caller = c.get("caller");
      const { id } = c.req.valid("param");
      if (!(await revokeApiKey(deps.db, caller.teamId, id))) throw notFound("API key");
      forgetRecentApiKeys();
      await recordAudit(deps.db, {
        teamId: caller.teamId,
        ...actorOf(caller),
        action: "api_key.revoke",
        resourceType: "api_key",
        resourceId: id,
        metadata: {},
      });
      return c.body(null, 204);
    },
  );

  return r;
}

apiKeyRoutes satisfies RouteModule;
