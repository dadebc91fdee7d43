import type { PeerCertificate } from "node:tls";
import type { CertificateAuthority, TlsIdentity } from "./ca.js";

/**
 * The control plane's client certificate for calling agents: short-lived (a day), renewed when
 * a third of its life is left, and swapped in without a restart. Users of it (agent RPC
 * transports, the port proxy's upstream agent) rebuild their connections when `generation`
 * changes; requests in flight finish on the connections they started on.
 */
export class ControlPlaneIdentity {
  private current: TlsIdentity;
  private gen = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly listeners = new Set<() => void>();

  private constructor(
    readonly ca: CertificateAuthority,
    first: TlsIdentity,
    private readonly ttlMs: number | undefined,
    private readonly log: (line: string) => void,
  ) {
    this.current = first;
  }

  static async create(
    ca: CertificateAuthority,
    log: (line: string) => void,
    ttlMs?: number,
  ): Promise<ControlPlaneIdentity> {
    return new ControlPlaneIdentity(ca, await ca.issueControlPlaneIdentity(ttlMs), ttlMs, log);
  }

  get identity(): TlsIdentity {
    return this.current;
  }

  get generation(): number {
    return this.gen;
  }

  get caPem(): string {
    return this.ca.certificatePem;
  }

  /** The current certificate as TLS client options (tests and tools calling an agent). */
  clientTls(): { ca: string; cert: string; key: string } {
    return { ca: this.ca.certificatePem, cert: this.current.certPem, key: this.current.keyPem };
  }

  /** Called after every renewal. */
  onRenew(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** A new certificate now (also what the timer does). */
  async renew(): Promise<void> {
    this.current = await this.ca.issueControlPlaneIdentity(this.ttlMs);
    this.gen++;
    for (const fn of this.listeners) fn();
  }

  /** Checks every minute whether a third of the certificate's life is left. */
  start(checkMs = 60_000): void {
    const issuedFor = this.current.notAfter.getTime() - Date.now();
    this.timer = setInterval(() => {
      if (this.current.notAfter.getTime() - Date.now() > issuedFor / 3) return;
      this.renew().catch((err: unknown) =>
        this.log(`[server] renewing the control plane's client certificate failed: ${err}`),
      );
    }, checkMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /**
   * TLS options for calling host `hostId`: the CA is the only trust root, and the agent's
   * certificate must name that host (pinning: a certificate of another host, however valid,
   * is refused).
   */
  tlsOptionsFor(hostId: string): {
    ca: string;
    cert: string;
    key: string;
    minVersion: "TLSv1.3";
    checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined;
  } {
    return {
      ca: this.ca.certificatePem,
      cert: this.current.certPem,
      key: this.current.keyPem,
      minVersion: "TLSv1.3",
      checkServerIdentity: (host, cert) => pinHost(hostId, host, cert),
    };
  }
}

export class HostIdentityError extends Error {
  override name = "HostIdentityError";
  readonly code = "ERR_NESTBOX_HOST_IDENTITY";
}

/**
 * The host id is the pin: the CA signs a certificate naming a host only for the holder of that
 * host's credentials. The address in its SAN is not checked, since an agent that moves keeps its
 * certificate until the next refresh.
 */
export function pinHost(hostId: string, host: string, cert: PeerCertificate): Error | undefined {
  const cn = cert.subject?.CN;
  if (cn !== hostId)
    return new HostIdentityError(
      `the agent at ${host} presented the certificate of host ${String(cn)}, not of ${hostId}`,
    );
  return undefined;
}
