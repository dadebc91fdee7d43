import type { components } from "./api-types.js";
import { resolveClientOptions } from "./config.js";
import { NestboxApiError } from "./errors.js";
import { Transport } from "./http.js";
import { USER_CREDENTIALS_HELP, userCredentials } from "./user-login.js";

type Schemas = components["schemas"];
export type AdminTeam = Schemas["AdminTeam"];
export type AdminTeamPage = Schemas["AdminTeamPage"];
export type AdminUser = Schemas["AdminUser"];
export type AdminUserPage = Schemas["AdminUserPage"];
export type AdminTemplate = Schemas["AdminTemplate"];
export type AdminSandbox = Schemas["AdminSandbox"];
export type AdminSandboxPage = Schemas["AdminSandboxPage"];
export type User = Schemas["User"];

export interface AdminClientOptions {
  /** The control plane's base URL (default `NESTBOX_API_URL`, else http://127.0.0.1:3000). */
  apiUrl?: string;
  /** A platform admin's access token (default `NESTBOX_TOKEN`); else one is logged in for. */
  token?: string;
  /** Default `NESTBOX_EMAIL`, else admin@localhost (the all-in-one admin). */
  email?: string;
  /** Default `NESTBOX_PASSWORD`, else (the all-in-one admin) `$NESTBOX_DIR/admin-password`. */
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
    const creds = userCredentials(env, opts);
    if (!creds)
      throw new NestboxApiError(
        401,
        "unauthorized",
        `no admin credentials: set ${USER_CREDENTIALS_HELP}`,
      );
    if ("token" in creds) return new NestboxAdmin(new Transport(apiUrl, undefined, creds.token));
    const { email, password } = creds;
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
