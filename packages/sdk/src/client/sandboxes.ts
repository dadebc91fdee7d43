import type { Transport } from "./http.js";
import type {
  CreateSandboxRequest,
  MetricsRange,
  Sandbox,
  SandboxMetrics,
  SandboxPage,
  SandboxStatus,
} from "./types.js";

export interface ListSandboxesOptions {
  /** Statuses to include (default on the server: all but stopped and error). */
  state?: SandboxStatus[];
  /** Only sandboxes whose metadata has all of these pairs. */
  metadata?: Record<string, string>;
  /** Page size, 1–1000 (server default 100). */
  limit?: number;
  /** Continue after a previous page. */
  nextToken?: string;
  signal?: AbortSignal;
}

/** `/v1/sandboxes`: lifecycle of the caller's team's sandboxes. */
export class Sandboxes {
  constructor(private readonly t: Transport) {}

  create(body: CreateSandboxRequest = {}, signal?: AbortSignal): Promise<Sandbox> {
    return this.t.call(this.t.api.POST("/v1/sandboxes", { body, signal }));
  }

  /** One page, newest first; `next_token` is null on the last page. */
  list(opts: ListSandboxesOptions = {}): Promise<SandboxPage> {
    return this.t.call(
      this.t.api.GET("/v1/sandboxes", {
        params: {
          query: {
            state: opts.state?.length ? opts.state.join(",") : undefined,
            // The API takes the pairs as one URL-encoded `k=v&…` value.
            metadata: opts.metadata ? new URLSearchParams(opts.metadata).toString() : undefined,
            limit: opts.limit,
            next_token: opts.nextToken,
          },
        },
        signal: opts.signal,
      }),
    );
  }

  /** Every page in turn, following `next_token`. */
  async *pages(opts: Omit<ListSandboxesOptions, "nextToken"> = {}): AsyncGenerator<Sandbox[]> {
    let nextToken: string | undefined;
    do {
      const page = await this.list({ ...opts, nextToken });
      yield page.sandboxes;
      nextToken = page.next_token ?? undefined;
    } while (nextToken);
  }

  get(id: string, signal?: AbortSignal): Promise<Sandbox> {
    return this.t.call(this.t.api.GET("/v1/sandboxes/{id}", { params: { path: { id } }, signal }));
  }

  /** Destroys the sandbox (its record stays, as `stopped`). */
  async kill(id: string, signal?: AbortSignal): Promise<void> {
    await this.t.call(
      this.t.api.DELETE("/v1/sandboxes/{id}", { params: { path: { id } }, signal }),
    );
  }

  pause(id: string, signal?: AbortSignal): Promise<Sandbox> {
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/pause", { params: { path: { id } }, signal }),
    );
  }

  /** `timeoutSec` replaces the idle timeout from now on (0 = never auto-pause). */
  resume(id: string, opts: { timeoutSec?: number; signal?: AbortSignal } = {}): Promise<Sandbox> {
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/resume", {
        params: { path: { id } },
        body: opts.timeoutSec === undefined ? {} : { timeout_sec: opts.timeoutSec },
        signal: opts.signal,
      }),
    );
  }

  /** Idle timeout in seconds (0 = never auto-pause). */
  setTimeout(id: string, timeoutSec: number, signal?: AbortSignal): Promise<Sandbox> {
    return this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/timeout", {
        params: { path: { id } },
        body: { timeout_sec: timeoutSec },
        signal,
      }),
    );
  }

  /** Counts as activity: restarts the idle timeout. */
  async ping(id: string, signal?: AbortSignal): Promise<void> {
    await this.t.call(
      this.t.api.POST("/v1/sandboxes/{id}/ping", { params: { path: { id } }, signal }),
    );
  }

  metrics(id: string, range: MetricsRange = "10m", signal?: AbortSignal): Promise<SandboxMetrics> {
    return this.t.call(
      this.t.api.GET("/v1/sandboxes/{id}/metrics", {
        params: { path: { id }, query: { range } },
        signal,
      }),
    );
  }
}
