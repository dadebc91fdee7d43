/** The host agent's side of the control plane's host REST API (`/v1/hosts/...`). */

/** What the agent reports about its host, in the API's spelling. */
export interface HostFacts {
  address: string;
  runtime: "qemu" | "namespace";
  arch: string;
  cpu_cores: number;
  memory_mb: number;
  disk_mb: number;
  agent_version: string;
}

/**
 * What the agent has committed right now, sent with each heartbeat: memory promised to its
 * sandboxes that are not paused (and to the warm pool), the disk sizes of all of them, and how
 * many sandboxes users have on it.
 */
export interface HostUsage {
  used_memory_mb: number;
  used_disk_mb: number;
  sandbox_count: number;
}

export interface IssuedCredentials {
  hostId: string;
  hostToken: string;
  hostTokenExpiresAt: string;
  refreshToken: string;
  /** PEM: this host's server certificate, for the key of the request sent. */
  certificate: string;
  certificateExpiresAt: string;
  /** PEM: the control plane's CA; only clients it signed may call this agent. */
  caCertificate: string;
}

/** The control plane answered with an error status; `status` decides what the agent does next. */
export class ControlPlaneHttpError extends Error {
  override name = "ControlPlaneHttpError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** No answer at all (connection refused, timeout, reset): always worth retrying. */
export class ControlPlaneUnreachableError extends Error {
  override name = "ControlPlaneUnreachableError";
}

const REQUEST_TIMEOUT_MS = 10_000;

export class ControlPlaneApi {
  constructor(
    /** Base URL without a trailing slash, e.g. `http://10.0.0.1:3000`. */
    readonly baseUrl: string,
  ) {}

  async register(token: string, csr: string, facts: HostFacts, signal?: AbortSignal) {
    return credentials(
      await this.call("POST", "/v1/hosts/register", { token, csr, ...facts }, signal),
    );
  }

  async refresh(refreshToken: string, csr: string, signal?: AbortSignal) {
    return credentials(
      await this.call(
        "POST",
        "/v1/hosts/auth/refresh",
        { refresh_token: refreshToken, csr },
        signal,
      ),
    );
  }

  async heartbeat(
    hostId: string,
    hostToken: string,
    body: HostFacts & Partial<HostUsage>,
    signal?: AbortSignal,
  ): Promise<void> {
    await this.call(
      "POST",
      `/v1/hosts/${encodeURIComponent(hostId)}/heartbeat`,
      body,
      signal,
      hostToken,
    );
  }

  private async call(
    method: string,
    route: string,
    body: unknown,
    signal: AbortSignal | undefined,
    hostToken?: string,
  ): Promise<unknown> {
    const url = `${this.baseUrl}${route}`;
    const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          "content-type": "application/json",
          ...(hostToken ? { "x-host-token": hostToken } : {}),
        },
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new ControlPlaneUnreachableError(
        `${method} ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`,
      );
    }
    const text = await res.text();
    if (!res.ok) {
      let code = "http_error";
      let message = text.slice(0, 300);
      try {
        const e = (JSON.parse(text) as { error?: { code?: unknown; message?: unknown } }).error;
        if (typeof e?.code === "string") code = e.code;
        if (typeof e?.message === "string") message = e.message;
      } catch {
        // Not our JSON error body (a proxy's HTML page, say): the raw text is the message.
      }
      throw new ControlPlaneHttpError(
        res.status,
        code,
        `${method} ${url}: ${res.status} ${code}: ${message}`,
      );
    }
    if (res.status === 204 || text === "") return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new ControlPlaneHttpError(res.status, "bad_response", `${method} ${url}: not JSON`);
    }
  }
}

function credentials(body: unknown): IssuedCredentials {
  const b = body as {
    host?: { id?: unknown };
    host_token?: unknown;
    host_token_expires_at?: unknown;
    refresh_token?: unknown;
    certificate?: unknown;
    certificate_expires_at?: unknown;
    ca_certificate?: unknown;
  };
  const hostId = b?.host?.id;
  if (
    typeof hostId !== "string" ||
    typeof b.host_token !== "string" ||
    typeof b.host_token_expires_at !== "string" ||
    typeof b.refresh_token !== "string" ||
    typeof b.certificate !== "string" ||
    typeof b.certificate_expires_at !== "string" ||
    typeof b.ca_certificate !== "string"
  ) {
    throw new ControlPlaneHttpError(200, "bad_response", "credentials response is incomplete");
  }
  return {
    hostId,
    hostToken: b.host_token,
    hostTokenExpiresAt: b.host_token_expires_at,
    refreshToken: b.refresh_token,
    certificate: b.certificate,
    certificateExpiresAt: b.certificate_expires_at,
    caCertificate: b.ca_certificate,
  };
}
