/**
 * Who is signed in. The access token lives in memory only (this object); the refresh token is
 * an HttpOnly cookie the page never sees. A reload restores the session with one refresh
 * call; a server without cookie sessions (401/404 there) simply means "signed out".
 */
import { goto } from "$app/navigation";
import {
  type AuthBody,
  api,
  CSRF_HEADER,
  call,
  errorFrom,
  setAuthHooks,
  type Team,
  type User,
} from "./client";

/** Renew this long before the access token expires. */
const RENEW_MARGIN_MS = 60_000;

class Session {
  token = $state<string | null>(null);
  user = $state<User | null>(null);
  team = $state<Team | null>(null);
  teams = $state<Team[]>([]);
  /** True once the first restore attempt has finished. */
  ready = $state(false);
  /** Signed out on purpose: go to the plain login page, not back to where the user was. */
  loggedOut = $state(false);
  private timer: ReturnType<typeof setTimeout> | undefined;
  private refreshing: Promise<boolean> | undefined;

  get signedIn(): boolean {
    return this.token !== null;
  }

  apply(body: AuthBody): void {
    this.loggedOut = false;
    this.token = body.token;
    this.user = body.user;
    this.team = body.team;
    clearTimeout(this.timer);
    const expires = body.expires_at ? Date.parse(body.expires_at) : Number.NaN;
    if (Number.isFinite(expires)) {
      const wait = Math.max(5_000, expires - Date.now() - RENEW_MARGIN_MS);
      this.timer = setTimeout(() => void this.refresh(), wait);
    }
  }

  clear(): void {
    clearTimeout(this.timer);
    this.token = null;
    this.user = null;
    this.team = null;
    this.teams = [];
  }

  /** One refresh through the cookie at a time; concurrent 401s share it. */
  refresh(): Promise<boolean> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<boolean> {
    // Tabs share the cookie: two tabs refreshing with one cookie at once would look like a
    // stolen token being replayed and end the session. A cross-tab lock runs them one after
    // the other, so the second one sends the cookie the first one received.
    const locks = typeof navigator === "undefined" ? undefined : navigator.locks;
    if (!locks) return this.refreshOnce();
    return (await locks.request("nbx-refresh", () => this.refreshOnce())) as boolean;
  }

  private async refreshOnce(): Promise<boolean> {
    const res = await fetch("/v1/auth/refresh", {
      method: "POST",
      headers: CSRF_HEADER,
      credentials: "same-origin",
    }).catch((err: unknown) => {
      console.warn("refresh: the control plane is unreachable", err);
      return undefined;
    });
    if (!res?.ok) return false;
    this.apply((await res.json()) as AuthBody);
    return true;
  }

  async restore(): Promise<void> {
    try {
      if (!this.signedIn) await this.refresh();
    } finally {
      this.ready = true;
    }
  }

  async login(email: string, password: string): Promise<void> {
    this.apply(await call(api.POST("/v1/auth/login", { body: { email, password } })));
  }

  async signup(name: string, email: string, password: string): Promise<void> {
    this.apply(await call(api.POST("/v1/auth/signup", { body: { name, email, password } })));
  }

  async loadTeams(): Promise<void> {
    this.teams = await call(api.GET("/v1/teams"));
  }

  async switchTeam(teamId: string): Promise<void> {
    this.apply(await call(api.POST("/v1/auth/switch-team", { body: { team_id: teamId } })));
  }

  async logout(): Promise<void> {
    const res = await fetch("/v1/auth/logout", {
      method: "POST",
      headers: CSRF_HEADER,
      credentials: "same-origin",
    }).catch(() => undefined);
    // 404: a server without cookie sessions; forgetting the in-memory token is the logout.
    if (res && !res.ok && res.status !== 404 && res.status !== 401)
      console.warn("logout:", errorFrom(res.status, await res.json().catch(() => null)).message);
    this.loggedOut = true;
    this.clear();
    await goto("/login");
  }
}

export const session = new Session();

/** Where a signed-out visitor goes: the login page, then back here. */
export function loginUrl(): string {
  const here = `${location.pathname}${location.search}`;
  return here === "/" || here.startsWith("/login")
    ? "/login"
    : `/login?next=${encodeURIComponent(here)}`;
}

setAuthHooks({
  token: () => session.token,
  refresh: () => session.refresh(),
  signedOut: () => {
    session.clear();
    void goto(loginUrl());
  },
});

/** A same-origin path from ?next=, or "/" (never an external URL). */
export function safeNext(raw: string | null): string {
  return raw?.startsWith("/") && !raw.startsWith("//") ? raw : "/";
}
