/**
 * Teams and users for the host tests: a team (BYOC or not) with an owner, an admin and a member,
 * each with a user JWT, written straight into the database (the admin route that turns BYOC on
 * belongs to another part of the API).
 */
import { issueUserToken } from "../../../packages/server/src/auth/user-tokens.js";
import type { Queryable } from "../../../packages/server/src/db/db.js";
import { addMembership, insertTeam } from "../../../packages/server/src/db/queries/teams.js";
import { insertUser } from "../../../packages/server/src/db/queries/users.js";
import type { Role } from "../../../packages/server/src/domain/caller.js";
import { newId } from "../../../packages/server/src/ids.js";

export interface TestUser {
  id: string;
  token: string;
}

export interface TestTeam {
  id: string;
  name: string;
  owner: TestUser;
  admin: TestUser;
  member: TestUser;
}

export async function testUser(
  db: Queryable,
  secret: Uint8Array,
  teamId: string,
  role: Role,
  opts: { isAdmin?: boolean; name?: string } = {},
): Promise<TestUser> {
  const id = newId("usr");
  await insertUser(db, {
    id,
    email: `${role}-${id}@example.com`,
    password_hash: "unused",
    name: opts.name ?? role,
    is_admin: opts.isAdmin ?? false,
  });
  await addMembership(db, { team_id: teamId, user_id: id, role, is_default: true });
  return { id, token: (await issueUserToken(secret, { userId: id, teamId, role })).token };
}

/** A team with an owner, an admin and a member; `byoc` sets teams.is_byoc. */
export async function testTeam(
  db: Queryable,
  secret: Uint8Array,
  name: string,
  byoc: boolean,
): Promise<TestTeam> {
  const team = await insertTeam(db, { id: newId("team"), name, slug: newId("team") });
  if (byoc) await db.query("UPDATE teams SET is_byoc = true WHERE id = $1", [team.id]);
  return {
    id: team.id,
    name,
    owner: await testUser(db, secret, team.id, "owner"),
    admin: await testUser(db, secret, team.id, "admin"),
    member: await testUser(db, secret, team.id, "member"),
  };
}
