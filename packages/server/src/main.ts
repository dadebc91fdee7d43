import type { Server } from "node:http";
import { parseArgs } from "node:util";
import type { Interceptor } from "@connectrpc/connect";
import { serve } from "@hono/node-server";
import { buildApp, type RouteModule } from "./api/app.js";
import type { AppDeps } from "./api/context.js";
import { adminRoutes } from "./api/routes/admin.js";
import { apiKeyRoutes } from "./api/routes/api-keys.js";
import { authRoutes } from "./api/routes/auth.js";
import { authSessionRoutes } from "./api/routes/auth-session.js";
import { commandRoutes } from "./api/routes/commands.js";
import { eventRoutes } from "./api/routes/events.js";
import { fileRoutes } from "./api/routes/files.js";
import { hostRoutes } from "./api/routes/hosts.js";
import { sandboxRoutes } from "./api/routes/sandboxes.js";
import { teamRoutes } from "./api/routes/teams.js";
import { templateRoutes } from "./api/routes/templates.js";
import { usageRoutes } from "./api/routes/usage.js";
import { attachWebSockets } from "./api/ws.js";
import { ensurePlatformTeam, seedAllInOne } from "./bootstrap/seed.js";
import type { ServerConfig } from "./config.js";
import type { Db } from "./db/db.js";
import { migrate } from "./db/migrate.js";
import { type DbObserver, observedDb } from "./db/observed.js";
import { openDb } from "./db/open.js";
import { ensureBaseTemplate } from "./db/queries/templates.js";
import { e2bRoutes } from "./e2b/routes.js";
import { AgentClients } from "./hosts/agent-clients.js";
import { ensureLocalHostToken } from "./hosts/local-host.js";
import { Reconciler } from "./hosts/reconciler.js";
import { DEFAULT_RESERVE, reserveFromPercent } from "./hosts/scoring.js";
import { loadCertificateAuthority } from "./pki/ca-store.js";
import { ControlPlaneIdentity } from "./pki/client-identity.js";
import { attachSandboxProxy, createSandboxProxy } from "./proxy/sandbox-proxy.js";
import { loadJwtSecret } from "./secrets.js";
import { AdminService } from "./services/admin.js";
import { Housekeeping } from "./services/housekeeping.js";
import { SandboxLifecycle } from "./services/lifecycle.js";
import { SandboxEvents } from "./services/sandbox-events.js";
import { SandboxService } from "./services/sandboxes.js";
import { TemplateService } from "./services/templates.js";

export type LogLevel = "info" | "debug";

export class UsageError extends Error {
  override name = "UsageError";
}

const USAGE = `Usage: nestbox server [options]

Runs the control plane: the REST API (/v1, OpenAPI at /openapi.json, docs at /docs), the
database, scheduling and reconciliation of host agents. Needs no root.

Options:
  --listen <host:port>     address to serve on (default 127.0.0.1:3000; env NESTBOX_LISTEN)
  --data-dir <dir>         state directory (default $NESTBOX_DIR or /var/lib/nestbox)
  --database-url <url>     PostgreSQL URL (default $DATABASE_URL; unset = embedded PGlite
                           database in <data-dir>/db)
  --domain <name>          sandbox domain for {port}-{id}.<domain> (default $NESTBOX_DOMAIN
                           or localhost)
  --public-url <url>       URL clients and agents use to reach this server
                           (default http://<listen>)
  --all-in-one             also seed an admin user, the platform team and an admin API key
                           (<data-dir>/admin-api-key), and a registration token for the local
                           host agent (<data-dir>/local-agent-token); used by 'nestbox up'
  --bootstrap-admin <email>  multi-host deployments: make sure this platform admin exists
                           (password in <data-dir>/admin-password, API key in
                           <data-dir>/admin-api-key, both 0600); idempotent
  --reconcile-interval <s> seconds between reconciliations with the host agents (default 15)
  --stop-when-stdin-closes stop as on SIGTERM when stdin reaches its end (a pipe from a
                           supervisor such as 'nestbox up' that may be killed outright)
  --log-level <level>      info (default) or debug: debug adds each scheduling decision
                           with its candidate hosts and scores (env NESTBOX_LOG_LEVEL)
  --host-stale-sec <s>     a host silent this long becomes unreachable and its running
                           sandboxes missing (default 90; env NESTBOX_HOST_STALE_SEC)
  --host-reserve-pct <p>   share of each host's reported RAM, disk and CPU the scheduler
                           keeps free, capped at 8 GiB / 30 GiB / 4 vCPUs (default 10;
                           env NESTBOX_HOST_RESERVE_PCT)
  -h, --help               this help

Environment: NESTBOX_JWT_SECRET (≥ 32 characters; default: a secret kept in
<data-dir>/jwt-secret), NESTBOX_ADMIN_API_KEY (all-in-one: use this admin key).
Host agents are trusted through the control plane's certificate authority: kept in the
database, its key sealed with NESTBOX_CA_KEY (64 hex; replicas need the same one; default a
key kept in <data-dir>/ca-key), or given as PEM files NESTBOX_CA_CERT_FILE + NESTBOX_CA_KEY_FILE.

Several control planes (replicas) may serve one PostgreSQL database behind a load balancer:
give them the same DATABASE_URL, NESTBOX_JWT_SECRET and NESTBOX_CA_KEY. The periodic jobs
(reconciler and host monitor, expiry, housekeeping) run on one of them at a time.
`;

export interface RunningServer {
  url: string;
  server: Server;
  db: Db;
  config: ServerConfig;
  reconciler: Reconciler;
  /** The client certificate it calls agents with (tests call agents as the control plane). */
  identity: ControlPlaneIdentity;
  close(): Promise<void>;
}

export type { DbObservation, DbObserver } from "./db/observed.js";

export interface StartOptions {
  config: ServerConfig;
  allInOne?: boolean;
  adminApiKey?: string;
  /** Seed this platform admin (and the admin key file) without the all-in-one local host. */
  bootstrapAdminEmail?: string;
  /** Reconcile interval; tests shorten it. */
  reconcileMs?: number;
  /** Seconds of heartbeat silence after which a host is unreachable (default 90). */
  hostStaleSec?: number;
  /** Percent of each host's capacity the scheduler keeps free (default 10). */
  hostReservePct?: number;
  /** `debug` also logs each scheduling decision (candidates and scores). */
  logLevel?: LogLevel;
  log?: (line: string) => void;
  /** Connect interceptors around every call to a host agent (instrumentation, e.g. the bench). */
  agentInterceptors?: Interceptor[];
  /** Told the duration of every database query and transaction (instrumentation). */
  observeDb?: DbObserver;
  /** The control plane's client certificate lifetime (default a day); tests shorten it. */
  clientCertTtlMs?: number;
  /** Host certificates' lifetime (default 7 days); tests shorten it. */
  hostCertTtlMs?: number;
}

/** Opens and migrates the database, seeds what must exist, and serves the API. */
export async function startServer(opts: StartOptions): Promise<RunningServer> {
  const { config } = opts;
  const log = opts.log ?? ((line: string) => console.log(line));
  const opened = await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, log });
  const db = opts.observeDb ? observedDb(opened, opts.observeDb) : opened;
  try {
    const { applied } = await migrate(db, { log });
    if (applied.length) log(`[server] database migrated: ${applied.join(", ")}`);
    const platform = await ensurePlatformTeam(db);
    await ensureBaseTemplate(db, platform.id, "tpl_base");
    if (opts.allInOne) {
      const seeded = await seedAllInOne(db, {
        dataDir: config.dataDir,
        adminApiKey: opts.adminApiKey,
      });
      if (seeded.apiKey)
        log(`[server] admin API key (also in ${seeded.apiKeyFile}): ${seeded.apiKey}`);
      else log(`[server] admin API key: in ${seeded.apiKeyFile}`);
      const local = await ensureLocalHostToken(db, config.dataDir);
      if (local.tokenFile)
        log(`[server] local host agent registration token written to ${local.tokenFile}`);
    } else if (opts.bootstrapAdminEmail) {
      const seeded = await seedAllInOne(db, {
        dataDir: config.dataDir,
        adminEmail: opts.bootstrapAdminEmail,
        adminApiKey: opts.adminApiKey,
      });
      log(
        `[server] platform admin ${opts.bootstrapAdminEmail}: password in ${config.dataDir}/admin-password (when created here), API key in ${seeded.apiKeyFile}`,
      );
    }

    const ca = await loadCertificateAuthority(
      db,
      {
        dataDir: config.dataDir,
        sealKeyHex: process.env.NESTBOX_CA_KEY,
        certFile: process.env.NESTBOX_CA_CERT_FILE || undefined,
        keyFile: process.env.NESTBOX_CA_KEY_FILE || undefined,
      },
      log,
    );
    if (opts.hostCertTtlMs) ca.hostCertTtlMs = opts.hostCertTtlMs;
    const identity = await ControlPlaneIdentity.create(ca, log, opts.clientCertTtlMs);
    identity.start();
    const agents = new AgentClients({ log, interceptors: opts.agentInterceptors, identity });
    const sandboxes = new SandboxService(db, agents, platform.id, log, {
      reserve: reserveFromPercent(opts.hostReservePct ?? DEFAULT_RESERVE.fraction * 100),
      ...(opts.logLevel === "debug" ? { debug: log } : {}),
    });
    const templates = new TemplateService(db, sandboxes, platform.id, log);
    const admin = new AdminService(db, sandboxes, templates, log);
    const deps: AppDeps = { db, config, sandboxes, agents };
    const events = new SandboxEvents(db, log);
    const modules: RouteModule[] = [
      authRoutes,
      authSessionRoutes,
      teamRoutes,
      apiKeyRoutes,
      adminRoutes(admin, platform.id),
      hostRoutes,
      sandboxRoutes(sandboxes),
      commandRoutes,
      fileRoutes,
      templateRoutes(templates, platform.id),
      eventRoutes(events),
      usageRoutes,
    ];
    const app = buildApp(deps, modules);
    const lifecycle = new SandboxLifecycle(db, sandboxes, log);
    app.route("/", e2bRoutes({ ...deps, sandboxes, lifecycle, platformTeamId: platform.id }));
    const server = await new Promise<Server>((resolve, reject) => {
      const s = serve(
        {
          fetch: app.fetch,
          hostname: config.host,
          port: config.port,
          // Proxied and API uploads stream for as long as they take (Node's default cuts any
          // request at 5 minutes); headersTimeout still bounds a slow request head.
          serverOptions: { requestTimeout: 0 },
        },
        () => resolve(s as Server),
      ) as Server;
      s.once("error", reject);
    });
    // Same origin as the API: sandbox-bound requests and upgrades never reach the app.
    const proxy = createSandboxProxy({
      db,
      config,
      log,
      resume: (team, id) => sandboxes.resume(team, id),
      identity,
    });
    attachSandboxProxy(server, proxy);
    attachWebSockets(server, deps);
    const reconciler = new Reconciler(db, agents, log, opts.hostStaleSec);
    reconciler.start(opts.reconcileMs);
    lifecycle.start();
    const housekeeping = new Housekeeping(db, log);
    housekeeping.start();
    const addr = server.address();
    const port = typeof addr === "object" && addr ? addr.port : config.port;
    const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;
    log(`[server] listening on ${url} (database: ${db.kind})`);
    return {
      url,
      server,
      db,
      config,
      reconciler,
      identity,
      async close() {
        identity.stop();
        await lifecycle.stop();
        await reconciler.stop();
        await housekeeping.stop();
        proxy.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await events.close();
        await db.close();
      },
    };
  } catch (err) {
    await db.close();
    throw err;
  }
}

function parseListen(value: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(value);
  const port = Number(m?.[2]);
  if (!m?.[1] || !(port >= 0 && port <= 65535))
    throw new UsageError(`--listen must be <host>:<port>, got ${value}`);
  return { host: m[1].replace(/^\[(.*)\]$/, "$1"), port };
}

export async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: "string", default: process.env.NESTBOX_LISTEN ?? "127.0.0.1:3000" },
      "data-dir": { type: "string", default: process.env.NESTBOX_DIR ?? "/var/lib/nestbox" },
      "database-url": { type: "string", default: process.env.DATABASE_URL },
      domain: { type: "string", default: process.env.NESTBOX_DOMAIN ?? "localhost" },
      "public-url": { type: "string", default: process.env.NESTBOX_PUBLIC_URL },
      "all-in-one": { type: "boolean", default: false },
      "bootstrap-admin": { type: "string" },
      "reconcile-interval": { type: "string", default: "15" },
      "stop-when-stdin-closes": { type: "boolean", default: false },
      "log-level": { type: "string", default: process.env.NESTBOX_LOG_LEVEL || "info" },
      "host-stale-sec": { type: "string", default: process.env.NESTBOX_HOST_STALE_SEC || "90" },
      "host-reserve-pct": {
        type: "string",
        default: process.env.NESTBOX_HOST_RESERVE_PCT || "10",
      },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const { host, port } = parseListen(values.listen);
  if (!/^[a-z0-9.-]+$/i.test(values.domain))
    throw new UsageError(`--domain is not a host name: ${values.domain}`);
  const publicUrl = values["public-url"] ?? `http://${values.listen}`;
  try {
    new URL(publicUrl);
  } catch {
    throw new UsageError(`--public-url is not a URL: ${publicUrl}`);
  }
  const reconcileSec = Number(values["reconcile-interval"]);
  if (!(reconcileSec >= 0.1 && reconcileSec <= 3600))
    throw new UsageError(
      `--reconcile-interval must be seconds between 0.1 and 3600, got ${values["reconcile-interval"]}`,
    );
  const dataDir = values["data-dir"];
  const config: ServerConfig = {
    host,
    port,
    dataDir,
    databaseUrl: values["database-url"] || undefined,
    jwtSecret: loadJwtSecret(dataDir, process.env.NESTBOX_JWT_SECRET),
    domain: values.domain,
    publicUrl,
  };
  if (config.databaseUrl && !process.env.NESTBOX_JWT_SECRET)
    console.log(
      `[server] NESTBOX_JWT_SECRET is not set: tokens are signed with ${dataDir}/jwt-secret, which other replicas do not have; give every replica the same NESTBOX_JWT_SECRET (and NESTBOX_CA_KEY)`,
    );
  const logLevel = values["log-level"];
  if (logLevel !== "info" && logLevel !== "debug")
    throw new UsageError(`--log-level must be info or debug, got ${logLevel}`);
  const hostStaleSec = Number(values["host-stale-sec"]);
  if (!Number.isInteger(hostStaleSec) || hostStaleSec < 1 || hostStaleSec > 86_400)
    throw new UsageError(
      `--host-stale-sec must be whole seconds from 1 to 86400, got ${values["host-stale-sec"]}`,
    );
  const hostReservePct = Number(values["host-reserve-pct"]);
  if (!(hostReservePct >= 0 && hostReservePct <= 50))
    throw new UsageError(
      `--host-reserve-pct must be a percentage from 0 to 50, got ${values["host-reserve-pct"]}`,
    );
  const running = await startServer({
    config,
    logLevel,
    hostStaleSec,
    hostReservePct,
    allInOne: values["all-in-one"],
    bootstrapAdminEmail: values["bootstrap-admin"],
    adminApiKey: process.env.NESTBOX_ADMIN_API_KEY || undefined,
    reconcileMs: reconcileSec * 1000,
  });
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      console.log(`[server] ${sig}: shutting down`);
      resolve();
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
    if (values["stop-when-stdin-closes"]) {
      process.stdin.once("end", () => stop("stdin closed (the supervisor is gone)"));
      process.stdin.resume();
    }
  });
  // A stdin still being read would keep the process alive after the server has closed.
  if (values["stop-when-stdin-closes"]) process.stdin.destroy();
  await running.close();
}
