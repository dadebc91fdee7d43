import { readFileSync } from "node:fs";
import path from "node:path";
import type { components } from "./api-types.js";
import { DEFAULT_NESTBOX_DIR, resolveClientOptions } from "./config.js";
import { NestboxApiError } from "./errors.js";
import { Transport } from "./http.js";

type Schemas = components["schemas"];
export type AdminTeam = Schemas["AdminTeam"];
export type AdminTeamPage = Schemas["AdminTeamPage"];
export type AdminUser = Schemas["AdminUser"];
export type AdminUserPage = Schemas["AdminUserPage"];
export type AdminTemplate = Schemas["AdminTemplate"];
export type AdminSandbox = Schemas["AdminSandbox"];
export type AdminSandboxPage = Schemas["AdminSandboxPage"];
export type User = Schemas["User"];

export const DEFAULT_ADMIN_EMAIL = "admin@localhost";

export interface AdminClientOptions {
  /** The control plane's base URL (default `NESTBOX_API_URL`, else http://127.0.0.1:3000). */
  apiUrl?: string;
  /** A platform admin's access token (default `NESTBOX_TOKEN`); else one is logged in for. */
  token?: string;
  /** Default `NESTBOX_ADMIN_EMAIL`, else admin@localhost (the all-in-one admin). */
  email?: string;
  /** Default `NESTBOX_ADMIN_PASSWORD`, else the all-in-one `$NESTBOX_DIR/admin-password`. */
  password?: string;
}

export interface Paging {
  page?: number;
  perPage?: number;
}

export interface AdminSandboxFilter extends Paging {
  teamId?: string;
  hostId?: string;
  status?: AdminSandbox["status"];
}

/**
 * The platform-admin API (`/v1/admin/…`). It takes a user session, never an API key, so the
 * client logs in (a bearer login: a 12-hour token, no cookie) unless it is given a token.
 *
 * ```ts
 * const admin = await NestboxAdmin.connect(); // NESTBOX_TOKEN, or the all-in-one admin
 * const { teams } = await admin.listTeams();
 * ```
 */
export class NestboxAdmin {
  private constructor(private readonly t: Transport) {}

  static async connect(
    opts: AdminClientOptions = {},
    env: NodeJS.ProcessEnv = process.env,
  ): Promise<NestboxAdmin> {
    const { apiUrl } = resolveClientOptions({ apiUrl: opts.apiUrl, apiKey: "" }, env);
    const token = opts.token ?? (env.NESTBOX_TOKEN?.trim() || undefined);
    if (token) return new NestboxAdmin(new Transport(apiUrl, undefined, token));
    const email = opts.email ?? (env.NESTBOX_ADMIN_EMAIL?.trim() || DEFAULT_ADMIN_EMAIL);
    const password = opts.password ?? env.NESTBOX_ADMIN_PASSWORD ?? adminPasswordFile(env);
    if (!password)
      throw new NestboxApiError(
        401,
        "unauthorized",
        "no admin credentials: set NESTBOX_TOKEN, or NESTBOX_ADMIN_EMAIL and NESTBOX_ADMIN_PASSWORD (on the 'nestbox up' host the admin password is read from $NESTBOX_DIR/admin-password)",
      );
    const anonymous = new Transport(apiUrl, undefined);
    const login = await anonymous.call(
      anonymous.api.POST("/v1/auth/login", { body: { email, password } }),
    );
    if (!login.user.is_admin)
      throw new NestboxApiError(403, "forbidden", `${email} is not a platform admin`);
    return new NestboxAdmin(new Transport(apiUrl, undefined, login.token));
  }

  listTeams(p: Paging = {}): Promise<AdminTeamPage> {
    return this.t.call(this.t.api.GET("/v1/admin/teams", { params: { query: pageQuery(p) } }));
  }

  /** Makes a team bring-your-own-compute (one way). */
  async enableByoc(teamId: string): Promise<void> {
    await this.t.call(
      this.t.api.PUT("/v1/admin/teams/{id}/byoc", {
        params: { path: { id: teamId } },
        body: { enabled: true },
      }),
    );
  }

  /** Deletes a team, destroying its live sandboxes. */
  async deleteTeam(teamId: string): Promise<void> {
    await this.t.call(
      this.t.api.DELETE("/v1/admin/teams/{id}", { params: { path: { id: teamId } } }),
    );
  }

  listUsers(p: Paging = {}): Promise<AdminUserPage> {
    return this.t.call(this.t.api.GET("/v1/admin/users", { params: { query: pageQuery(p) } }));
  }

  /** Deactivating revokes the user's keys and sessions and stops their solely owned teams' sandboxes. */
  setUserActive(userId: string, active: boolean): Promise<User> {
    return this.t.call(
      this.t.api.PUT("/v1/admin/users/{id}/active", {
        params: { path: { id: userId } },
        body: { active },
      }),
    );
  }

  async listTemplates(): Promise<AdminTemplate[]> {
    const { templates } = await this.t.call(this.t.api.GET("/v1/admin/templates"));
    return templates;
  }

  /** Deletes a platform template from every online host. */
  async deleteTemplate(name: string): Promise<void> {
    await this.t.call(
      this.t.api.DELETE("/v1/admin/templates/{name}", { params: { path: { name } } }),
    );
  }

  listSandboxes(f: AdminSandboxFilter = {}): Promise<AdminSandboxPage> {
    return this.t.call(
      this.t.api.GET("/v1/admin/sandboxes", {
        params: {
          query: {
            ...pageQuery(f),
            ...(f.teamId ? { team_id: f.teamId } : {}),
            ...(f.hostId ? { host_id: f.hostId } : {}),
            ...(f.status ? { status: f.status } : {}),
          },
        },
      }),
    );
  }

  /** Any team's sandbox into the platform template `name` (replacing one of that name). */
  snapshotSandbox(sandboxId: string, name: string): Promise<AdminTemplate> {
    return this.t.call(
      this.t.api.POST("/v1/admin/sandboxes/{id}/snapshot", {
        params: { path: { id: sandboxId } },
        body: { name },
      }),
    );
  }
}

const pageQuery = (p: Paging) => ({
  ...(p.page !== undefined ? { page: p.page } : {}),
  ...(p.perPage !== undefined ? { per_page: p.perPage } : {}),
});

/** The all-in-one admin's password file, or undefined when it is not there or not ours. */
function adminPasswordFile(env: NodeJS.ProcessEnv): string | undefined {
  const file = path.join(env.NESTBOX_DIR || DEFAULT_NESTBOX_DIR, "admin-password");
  try {
    return readFileSync(file, "utf8").trim() || undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "EACCES" || code === "ENOTDIR") return undefined;
    throw new Error(`cannot read the admin password file ${file}: ${(err as Error).message}`);
  }
}
