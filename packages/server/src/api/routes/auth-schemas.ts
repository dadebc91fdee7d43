import { z } from "@hono/zod-openapi";
import type { Queryable } from "../../db/db.js";
import {
  addMembership,
  insertTeam,
  type TeamRow,
  type TeamWithRole,
} from "../../db/queries/teams.js";
import type { UserRow } from "../../db/queries/users.js";
import { newId, randomBase36 } from "../../ids.js";
import { ErrorSchema } from "../schemas.js";

/** Account schemas and views shared by the auth, team, API-key and admin routes. */

export const json = <T extends z.ZodTypeAny>(schema: T) => ({
  content: { "application/json": { schema } },
});

/** The 403 response, which the shared error list does not carry. */
export const forbiddenResponse = {
  403: { description: "Not allowed", ...json(ErrorSchema) },
} as const;

/** Trimmed and lowercased before it is checked, stored or looked up. */
export const EmailSchema = z
  .string()
  .trim()
  .toLowerCase()
  .max(254)
  .regex(/^[^\s@]+@[^\s@]+$/, "must be an e-mail address")
  .openapi({ example: "ada@example.com" });

export const PersonNameSchema = z.string().trim().min(1).max(100).openapi({ example: "Ada" });
export const TeamNameSchema = z.string().trim().min(1).max(100).openapi({ example: "Research" });

export const idParam = (prefix: "team" | "usr" | "key", name = "id") =>
  z
    .string()
    .regex(new RegExp(`^${prefix}_[a-z0-9]{20}$`), `must be an id of the form ${prefix}_…`)
    .openapi({ param: { name, in: "path" }, example: `${prefix}_k3j4h5g6f7d8s9a0q1w2` });

export const RoleSchema = z.enum(["owner", "admin", "member"]);

export const UserSchema = z
  .object({
    id: z.string(),
    email: z.string(),
    name: z.string(),
    is_admin: z.boolean(),
    status: z.enum(["active", "disabled"]),
    created_at: z.string().openapi({ format: "date-time" }),
  })
  .openapi("User");

export const TeamSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    slug: z.string(),
    is_platform: z.boolean(),
    is_byoc: z.boolean().openapi({
      description: "bring-your-own-compute: its sandboxes run only on the team's own hosts",
    }),
    created_at: z.string().openapi({ format: "date-time" }),
    /** The caller's role in this team. */
    role: RoleSchema,
  })
  .openapi("Team");

export const userView = (u: UserRow): z.infer<typeof UserSchema> => ({
  id: u.id,
  email: u.email,
  name: u.name,
  is_admin: u.is_admin,
  status: u.status,
  created_at: u.created_at.toISOString(),
});

export const teamView = (t: TeamWithRole): z.infer<typeof TeamSchema> => ({
  id: t.id,
  name: t.name,
  slug: t.slug,
  is_platform: t.is_platform,
  is_byoc: t.is_byoc,
  created_at: t.created_at.toISOString(),
  role: t.role,
});

/** A URL-friendly, unique slug: the name's letters and digits plus a random suffix. */
export function teamSlug(name: string): string {
  const base = name
    .toLowerCase()
    .normalize("NFKD")
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 40)
    .replace(/-+$/, "");
  return `${base || "team"}-${randomBase36(6)}`;
}

/** Creates a team with `ownerId` as its owner (in the caller's transaction). */
export async function createTeamOwnedBy(
  tx: Queryable,
  name: string,
  ownerId: string,
  isDefault: boolean,
): Promise<TeamWithRole> {
  const team: TeamRow = await insertTeam(tx, { id: newId("team"), name, slug: teamSlug(name) });
  await addMembership(tx, {
    team_id: team.id,
    user_id: ownerId,
    role: "owner",
    is_default: isDefault,
  });
  return { ...team, role: "owner" };
}

/** PostgreSQL's unique_violation, as both drivers report it. */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === "23505";
}

export const AuthResponseSchema = z
  .object({
    token: z.string(),
    /** When `token` stops working (10 min for a cookie session, 12 h for a bearer login). */
    expires_at: z.string().openapi({ format: "date-time" }),
    user: UserSchema,
    team: TeamSchema,
  })
  .openapi("AuthResponse");
