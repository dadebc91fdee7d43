/**
 * Who calls the API, shared by the auth layer that resolves it and the routes that read it.
 * It lives below both (db ← auth ← api) so no lower layer imports from `api/`.
 */

export type Role = "owner" | "admin" | "member";

/**
 * Who is calling, resolved by the auth middleware (src/auth/middleware.ts) before any handler
 * runs. Every team-scoped query takes `teamId` from here, never from the request body.
 */
export type Caller =
  | {
      kind: "user";
      userId: string;
      email: string;
      teamId: string;
      role: Role;
      /** Read from the database on this request, not from the token. */
      isAdmin: boolean;
      /** The browser session behind the token (cookie sessions only). */
      sessionId?: string;
    }
  | { kind: "api_key"; keyId: string; keyName: string; teamId: string; createdBy: string | null };

/** The Hono environment of every request: its caller and its request id. */
export interface AppEnv {
  Variables: { caller: Caller; requestId: string };
}
