/** Control-plane settings, from flags and environment (see README). */
export interface ServerConfig {
  /** Address the HTTP server listens on. */
  host: string;
  port: number;
  /** `NESTBOX_DIR`: embedded database, secrets, admin key file. */
  dataDir: string;
  /** PostgreSQL URL; undefined = embedded PGlite in `${dataDir}/db`. */
  databaseUrl: string | undefined;
  /** HS256 secret for user and host JWTs (≥ 32 bytes). */
  jwtSecret: Uint8Array;
  /** Sandbox domain for `{port}-{id}.{domain}` (default `localhost`). */
  domain: string;
  /** The URL clients use to reach this control plane (printed, and given to agents). */
  publicUrl: string;
}
