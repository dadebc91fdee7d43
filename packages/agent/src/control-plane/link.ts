import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../log.js";
import {
  ControlPlaneApi,
  ControlPlaneHttpError,
  ControlPlaneUnreachableError,
  type HostFacts,
  type HostUsage,
  type IssuedCredentials,
} from "./api.js";
import {
  loadCredentials,
  removeCredentials,
  type StoredCredentials,
  saveCredentials,
} from "./credentials.js";
import { certificateRequest, loadOrCreateTlsKey, tlsKeyPath } from "./tls-identity.js";

/** The seed's interval; the control plane marks a host unreachable after 90 s (three missed). */
export const HEARTBEAT_INTERVAL_MS = 30_000;
/** Refresh the host token when less than this is left (it lives 24 h). */
const REFRESH_MARGIN_MS = 60 * 60 * 1000;
/** Refresh (and so renew the server certificate, 7 days) when less than this is left. */
const CERT_MARGIN_MS = 2 * 24 * 60 * 60 * 1000;
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

/** What the agent does when the link changes (set once the agent's parts exist). */
export interface LinkHandlers {
  /** New credentials (a certificate among them) were stored: serve with them from now on. */
  onCredentials?: (c: ServingCredentials) => void;
  /** The control plane deleted this host (heartbeat 404): stop its sandboxes and exit. */
  onHostDeleted?: () => void;
  /** Refreshing was refused for good: pause the sandboxes (the link keeps retrying). */
  onRefused?: () => void;
}

/** What the agent's TLS server needs. */
export interface ServingCredentials {
  hostId: string;
  keyPem: string;
  certificate: string;
  caCertificate: string;
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
  private handlers: LinkHandlers = {};

  private constructor(
    private readonly opts: LinkOptions,
    stored: StoredCredentials | undefined,
    private readonly keyPem: string,
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
    const keyPem = await loadOrCreateTlsKey(tlsKeyPath(opts.credentialsFile));
    return new ControlPlaneLink({ ...opts, controlPlane }, usable, keyPem);
  }

  /** Stored credentials with a certificate good for a while: the agent can serve at once. */
  get serving(): ServingCredentials | undefined {
    return this.creds ? this.servingOf(this.creds) : undefined;
  }

  private servingOf(c: StoredCredentials): ServingCredentials | undefined {
    if (!c.certificate || !c.caCertificate) return undefined;
    return {
      hostId: c.hostId,
      keyPem: this.keyPem,
      certificate: c.certificate,
      caCertificate: c.caCertificate,
    };
  }

  private certificateDue(c: StoredCredentials): boolean {
    return (
      !c.certificate ||
      !c.certificateExpiresAt ||
      Date.parse(c.certificateExpiresAt) - Date.now() < CERT_MARGIN_MS
    );
  }

  on(handlers: LinkHandlers): void {
    this.handlers = { ...this.handlers, ...handlers };
  }

  get hostId(): string | undefined {
    return this.creds?.hostId;
  }

  /**
   * Registers (or takes up the stored credentials) and starts heartbeating. Resolves once the
   * control plane has accepted this agent; rejects with ControlPlaneRejectedError when it never
   * will (a bad or used registration token), or when stop() is called first.
   */
  async start(facts: () => HostFacts, usage?: () => HostUsage): Promise<void> {
    try {
      await this.connect(facts);
    } catch (err) {
      if (this.abort.signal.aborted) return;
      throw err;
    }
    this.loop = this.heartbeatLoop(facts, usage).catch((err: unknown) => {
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
      // Without a certificate good for a while the agent cannot serve: get one first.
      if (this.certificateDue(this.creds))
        await this.retrying("renewing this host's certificate", () => this.refresh());
      return;
    }
    const token = this.opts.registrationToken;
    if (!token) throw new ControlPlaneRejectedError("no credentials and no registration token");
    this.registrationTokenSpent = true;
    const csr = await certificateRequest(this.keyPem);
    const issued = await this.retrying("registering with the control plane", () =>
      this.api.register(token, csr, facts(), this.abort.signal),
    );
    await this.store(issued);
    log.info("registered with the control plane", {
      controlPlane: this.opts.controlPlane,
      hostId: issued.hostId,
    });
  }

  private async heartbeatLoop(facts: () => HostFacts, usage?: () => HostUsage): Promise<void> {
    const { log } = this.opts;
    const interval = this.opts.heartbeatIntervalMs ?? HEARTBEAT_INTERVAL_MS;
    let failures = 0;
    let refreshedAfter401 = false;
    /** Refreshing was refused: every round tries again (the seed's behaviour). */
    let refused = false;
    while (!this.abort.signal.aborted) {
      const creds = this.creds;
      if (!creds) return;
      let delay = interval;
      try {
        if (
          refused ||
          Date.parse(creds.hostTokenExpiresAt) - Date.now() < REFRESH_MARGIN_MS ||
          this.certificateDue(creds)
        ) {
          await this.refresh();
          if (refused) log.info("the control plane accepts this host's credentials again");
          refused = false;
        }
        const current = this.creds ?? creds;
        await this.api.heartbeat(
          current.hostId,
          current.hostToken,
          { ...facts(), ...usage?.() },
          this.abort.signal,
        );
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
            "the control plane no longer knows this host (it was deleted): its sandboxes " +
              "are destroyed and the agent exits",
            { hostId: creds.hostId, credentialsRemoved: this.opts.credentialsFile },
          );
          this.handlers.onHostDeleted?.();
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
              if (await this.registerAgain(facts)) continue;
              log.error(
                "the control plane refused this host's credentials: sandboxes are paused; " +
                  "retrying with backoff",
                { hostId: creds.hostId, error: refreshErr.message },
              );
              refused = true;
              this.handlers.onRefused?.();
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
    const previous = this.creds;
    this.creds = undefined;
    try {
      await this.connect(facts);
      return true;
    } catch (err) {
      this.creds = previous;
      this.opts.log.error("registering again failed", {
        error: err instanceof Error ? err.message : String(err),
      });
      return false;
    }
  }

  private async refresh(): Promise<void> {
    const creds = this.creds;
    if (!creds) return;
    const csr = await certificateRequest(this.keyPem);
    const issued = await this.api.refresh(creds.refreshToken, csr, this.abort.signal);
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
    const serving = this.servingOf(next);
    if (serving) this.handlers.onCredentials?.(serving);
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
