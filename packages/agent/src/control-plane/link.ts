import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../log.js";
import {
  ControlPlaneApi,
  ControlPlaneHttpError,
  ControlPlaneUnreachableError,
  type HostFacts,
  type IssuedCredentials,
} from "./api.js";
import {
  loadCredentials,
  removeCredentials,
  type StoredCredentials,
  saveCredentials,
} from "./credentials.js";

export const HEARTBEAT_INTERVAL_MS = 10_000;
/** Refresh the host token when less than this is left (it lives 24 h). */
const REFRESH_MARGIN_MS = 60 * 60 * 1000;
const BACKOFF_MAX_MS = 30_000;
const TOKEN_RE = /^[0-9a-f]{64}$/;

/** Bad settings, found before the agent starts serving (the CLI reports them as usage errors). */
export class ControlPlaneConfigError extends Error {
  override name = "ControlPlaneConfigError";
}

/** The control plane refused this agent for good (token rejected, host deleted). */
export class ControlPlaneRejectedError extends Error {
  override name = "ControlPlaneRejectedError";
}

export interface LinkOptions {
  /** Control plane base URL (http or https). */
  controlPlane: string;
  /** One-time token from `POST /v1/hosts`; needed only when there are no stored credentials. */
  registrationToken: string | undefined;
  /** `<data-dir>/agent/<instance>/credentials.json`. */
  credentialsFile: string;
  log: Logger;
  heartbeatIntervalMs?: number;
}

/**
 * Keeps this agent registered with the control plane: registers once with a registration token
 * (or reuses stored credentials), then heartbeats, refreshing the host token before it expires.
 * Transient failures are retried with backoff and logged sparsely; a deleted host ends the loop.
 */
export class ControlPlaneLink {
  private readonly api: ControlPlaneApi;
  private readonly abort = new AbortController();
  private creds: StoredCredentials | undefined;
  private loop: Promise<void> | undefined;
  private registrationTokenSpent = false;

  private constructor(
    private readonly opts: LinkOptions,
    stored: StoredCredentials | undefined,
  ) {
    this.api = new ControlPlaneApi(opts.controlPlane);
    this.creds = stored;
  }

  /**
   * Checks the settings and loads stored credentials before anything else starts, so a missing
   * registration token is reported at once rather than after the runtime is prepared.
   */
  static async prepare(opts: LinkOptions): Promise<ControlPlaneLink> {
    const controlPlane = normaliseBaseUrl(opts.controlPlane, "--control-plane");
    if (opts.registrationToken !== undefined && !TOKEN_RE.test(opts.registrationToken))
      throw new ControlPlaneConfigError("the registration token must be 64 hex characters");
    const stored = await loadCredentials(opts.credentialsFile);
    const usable = stored?.controlPlane === controlPlane ? stored : undefined;
    if (!usable && !opts.registrationToken) {
      throw new ControlPlaneConfigError(
        stored
          ? `the stored credentials are for ${stored.controlPlane}; registering with ${controlPlane} needs --registration-token (or NESTBOX_REGISTRATION_TOKEN)`
          : `not registered with ${controlPlane} yet: pass --registration-token (or NESTBOX_REGISTRATION_TOKEN)`,
      );
    }
    return new ControlPlaneLink({ ...opts, controlPlane }, usable);
  }

  get hostId(): string | undefined {
    return this.creds?.hostId;
  }

  /**
   * Registers (or takes up the stored credentials) and starts heartbeating. Resolves once the
   * control plane has accepted this agent; rejects with ControlPlaneRejectedError when it never
   * will (a bad or used registration token), or when stop() is called first.
   */
  async start(facts: () => HostFacts): Promise<void> {
    try {
      await this.connect(facts);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      throw err;
    }
    this.loop = this.heartbeatLoop(facts).catch((err: unknown) => {
      if (!this.abort.signal.aborted)
        this.opts.log.error("control plane heartbeat loop failed", { error: String(err) });
    });
  }

  /** Stops heartbeating; in-flight requests are abandoned. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async connect(facts: () => HostFacts): Promise<void> {
    const { log } = this.opts;
    if (this.creds) {
      log.info("using stored control plane credentials", {
        controlPlane: this.opts.controlPlane,
        hostId: this.creds.hostId,
      });
      return;
    }
    const token = this.opts.registrationToken;
    if (!token) throw new ControlPlaneRejectedError("no credentials and no registration token");
    this.registrationTokenSpent = true;
    const issued = await this.retrying("registering with the control plane", () =>
      this.api.register(token, facts(), this.abort.signal),
    );
    await this.store(issued);
    log.info("registered with the control plane", {
      controlPlane: this.opts.controlPlane,
      hostId: issued.hostId,
    });
  }

  private async heartbeatLoop(facts: () => HostFacts): Promise<void> {
    const { log } = this.opts;
    const interval = this.opts.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS;
    let failures = 0;
    let refreshedAfter401 = false;
    while (!this.abort.signal.aborted) {
      const creds = this.creds;
      if (!creds) return;
      let delay = interval;
      try {
        if (Date.parse(creds.hostTokenExpiresAt) - Date.now() < REFRESH_MARGIN_MS)
          await this.refresh();
        const current = this.creds ?? creds;
        await this.api.heartbeat(current.hostId, current.hostToken, facts(), this.abort.signal);
        if (failures > 0)
          log.info("control plane heartbeat works again", { afterFailures: failures });
        failures = 0;
        refreshedAfter401 = false;
      } catch (caught) {
        if (this.abort.signal.aborted) return;
        let err = caught;
        if (err instanceof ControlPlaneHttpError && err.status === 404) {
          // Useless now; without them the next start asks for a new registration token.
          await removeCredentials(this.opts.credentialsFile);
          this.creds = undefined;
          log.error(
            "the control plane no longer knows this host (it was deleted): heartbeats stop " +
              "unless a registration token was given; sandboxes keep running",
            { hostId: creds.hostId, credentialsRemoved: this.opts.credentialsFile },
          );
          if (await this.registerAgain(facts)) continue;
          return;
        }
        if (
          err instanceof ControlPlaneHttpError &&
          (err.status === 401 || err.status === 403) &&
          !refreshedAfter401
        ) {
          // The host token may have been signed with a secret the control plane no longer has.
          refreshedAfter401 = true;
          try {
            await this.refresh();
            continue;
          } catch (refreshErr) {
            if (refreshErr instanceof ControlPlaneHttpError && refreshErr.status === 401) {
              log.error(
                "the control plane rejected this host's stored credentials: heartbeats stop " +
                  "unless a registration token was given",
                { hostId: creds.hostId, error: refreshErr.message },
              );
              this.creds = undefined;
              if (await this.registerAgain(facts)) continue;
              return;
            }
            err = refreshErr;
          }
        }
        failures++;
        delay = backoff(failures);
        // 1st, 2nd, 4th, 8th … failure: a long outage costs a handful of lines, not thousands.
        if ((failures & (failures - 1)) === 0) {
          log.warn("control plane heartbeat failed, retrying", {
            failures,
            retryInMs: delay,
            error: err instanceof Error ? err.message : String(err),
          });
        }
      }
      await sleep(delay, undefined, { signal: this.abort.signal }).catch(() => undefined);
    }
  }

  /**
   * After stored credentials stopped working, a registration token given on this start (not yet
   * spent by this process) is tried once. Returns whether the agent is registered again.
   */
  private async registerAgain(facts: () => HostFacts): Promise<boolean> {
    const token = this.opts.registrationToken;
    if (!token || this.registrationTokenSpent) return false;
    try {
      await this.connect(facts);
      return true;
    } catch (err) {
      this.opts.log.error("registering again failed: heartbeats stop", {
        error: err instanceof Error ? err.message : String(err),
      });
      return false;
    }
  }

  private async refresh(): Promise<void> {
    const creds = this.creds;
    if (!creds) return;
    const issued = await this.api.refresh(creds.refreshToken, this.abort.signal);
    await this.store(issued);
    this.opts.log.info("host token refreshed", {
      hostId: issued.hostId,
      expiresAt: issued.hostTokenExpiresAt,
    });
  }

  private async store(issued: IssuedCredentials): Promise<void> {
    const next: StoredCredentials = { controlPlane: this.opts.controlPlane, ...issued };
    await saveCredentials(this.opts.credentialsFile, next);
    this.creds = next;
  }

  /**
   * Runs fn until it succeeds, backing off on unreachable control planes and server errors;
   * 4xx answers are final (ControlPlaneRejectedError).
   */
  private async retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (this.abort.signal.aborted) throw new ControlPlaneRejectedError(`${what}: stopped`);
        const transient =
          err instanceof ControlPlaneUnreachableError ||
          (err instanceof ControlPlaneHttpError && (err.status >= 500 || err.status === 429));
        if (!transient) {
          throw new ControlPlaneRejectedError(
            `${what}: ${err instanceof Error ? err.message : String(err)}`,
          );
        }
        const delay = backoff(attempt);
        if ((attempt & (attempt - 1)) === 0) {
          this.opts.log.warn(`${what} failed, retrying`, {
            attempt,
            retryInMs: delay,
            error: (err as Error).message,
          });
        }
        await sleep(delay, undefined, { signal: this.abort.signal }).catch(() => undefined);
      }
    }
  }
}

/** 1 s, 2 s, 4 s … capped at 30 s. */
const backoff = (n: number): number => Math.min(BACKOFF_MAX_MS, 1000 * 2 ** Math.min(n - 1, 15));

/** An http(s) base URL without credentials, query or fragment, and without a trailing slash. */
export function normaliseBaseUrl(value: string, flag: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch (err) {
    throw new ControlPlaneConfigError(`${flag} must be an http(s) URL, got ${value} (${err})`);
  }
  if (
    (u.protocol !== "http:" && u.protocol !== "https:") ||
    u.username ||
    u.password ||
    u.search ||
    u.hash
  )
    throw new ControlPlaneConfigError(
      `${flag} must be an http(s) URL without credentials, query or fragment, got ${value}`,
    );
  return u.href.replace(/\/+$/, "");
}
