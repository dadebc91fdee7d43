import { createRoute, z } from "@hono/zod-openapi";
import { requireCaller } from "../../auth/middleware.js";
import type { TemplateRow } from "../../db/queries/templates.js";
import { SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "../../ids.js";
import type { TemplateService } from "../../services/templates.js";
import { newRouter, type RouteModule } from "../app.js";
import { errorResponses } from "../schemas.js";

const NAME = z
  .string()
  .regex(
    TEMPLATE_NAME_RE,
    "must be 1-63 characters a-z, 0-9, . _ - (starting with a letter or digit)",
  );

const TemplateSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    kind: z.enum(["base", "snapshot"]),
    platform: z.boolean(),
    vcpus: z.number().int().nullable(),
    memory_mb: z.number().int().nullable(),
    size_bytes: z.number().int(),
    host_id: z.string().nullable(),
    created_at: z.string(),
  })
  .openapi("Template");

const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

export function templateRoutes(service: TemplateService, platformTeamId: string): RouteModule {
  const view = (t: TemplateRow): z.infer<typeof TemplateSchema> => ({
    id: t.id,
    name: t.name,
    kind: t.kind,
    platform: t.team_id === platformTeamId,
    vcpus: t.vcpus,
    memory_mb: t.memory_mb,
    size_bytes: t.size_bytes,
    host_id: t.host_id,
    created_at: t.created_at.toISOString(),
  });
  return (deps) => {
    const r = newRouter();
    const auth = requireCaller(deps, { apiKey: true });
    r.use("/templates", auth);
    r.use("/templates/*", auth);

    r.openapi(
      createRoute({
        method: "get",
        path: "/templates",
        summary: "Your team's templates and the platform's",
        tags: ["templates"],
        responses: {
          200: {
            description: "Templates",
            ...json(z.object({ templates: z.array(TemplateSchema) })),
          },
          ...errorResponses,
        },
      }),
      async (c) =>
        c.json({ templates: (await service.list(c.get("caller").teamId)).map(view) }, 200),
    );

    r.openapi(
      createRoute({
        method: "post",
        path: "/templates",
        summary: "Snapshot a running or paused sandbox into a template (the sandbox is destroyed)",
        tags: ["templates"],
        request: {
          body: {
            ...json(
              z
                .object({
                  sandbox_id: z.string().regex(SANDBOX_ID_RE, "must be a sandbox id"),
                  name: NAME,
                })
                .strict(),
            ),
            required: true,
          },
        },
        responses: { 201: { description: "Created", ...json(TemplateSchema) }, ...errorResponses },
      }),
      async (c) => {
        const { sandbox_id, name } = c.req.valid("json");
        const caller = c.get("caller");
        const createdBy = caller.kind === "user" ? caller.userId : caller.createdBy;
        const t = await service.snapshot(caller.teamId, sandbox_id, name, createdBy);
        return c.json(view(t), 201);
      },
    );

    r.openapi(
      createRoute({
        method: "delete",
        path: "/templates/{name}",
        summary: "Delete a team template (platform templates: admins only)",
        tags: ["templates"],
        request: {
          params: z.object({ name: NAME.openapi({ param: { name: "name", in: "path" } }) }),
        },
        responses: { 204: { description: "Deleted" }, ...errorResponses },
      }),
      async (c) => {
        const caller = c.get("caller");
        const isAdmin = caller.kind === "user" && caller.isAdmin;
        await service.delete(caller.teamId, c.req.valid("param").name, isAdmin);
        return c.body(null, 204);
      },
    );
    return r;
  };
}
