import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "@nestbox/proto/hostagent";
import type { ControlPlaneIdentity } from "../pki/client-identity.js";

export type AgentClient = Client<typeof HostAgentService>;

export interface AgentClientsOptions {
  log?: (line: string) => void;
  /**
   * Connect interceptors run around every call to every agent, in order (the first is the
   * outermost). The seam for instrumentation such as the control-plane benchmark's timing of
   * agent calls; the server itself installs none.
   */
  interceptors?: Interceptor[];
  /**
   * The control plane's client certificate and CA: agents are called only over mutual TLS,
   * each pinned to its host id. Without it no agent can be called (tests of other parts).
   */
  identity?: ControlPlaneIdentity;
}

/** An agent address this control plane will not call (not https, or no identity to call with). */
export class AgentAddressError extends Error {
  override name = "AgentAddressError";
}

/**
 * One Connect client per host address. Transports keep HTTP/1.1 connections alive, so reusing
 * them matters for exec round trips; a host that re-registers with a new address gets a new one,
 * and a renewed client certificate gets new clients for every host (calls in flight finish on
 * the old connections).
 */
export class AgentClients {
  private readonly clients = new Map<string, { address: string; client: AgentClient }>();
  private readonly log: (line: string) => void;
  private readonly interceptors: Interceptor[];
  readonly identity: ControlPlaneIdentity | undefined;

  /** A bare function is the log (the form callers used before there were options). */
  constructor(options: AgentClientsOptions | ((line: string) => void) = {}) {
    const o = typeof options === "function" ? { log: options } : options;
    this.log = o.log ?? ((l) => console.log(l));
    this.interceptors = o.interceptors ?? [];
    this.identity = o.identity;
    this.identity?.onRenew(() => this.clients.clear());
  }

  get(hostId: string, address: string): AgentClient {
    const cached = this.clients.get(hostId);
    if (cached && cached.address === address) return cached.client;
    if (!address.startsWith("https://"))
      throw new AgentAddressError(`host ${hostId}: agent address ${address} is not https`);
    if (!this.identity)
      throw new AgentAddressError(`host ${hostId}: this control plane has no client certificate`);
    // Binary protobuf: file chunks would otherwise travel base64-encoded in JSON.
    const transport = createConnectTransport({
      baseUrl: address,
      httpVersion: "1.1",
      useBinaryFormat: true,
      // No gzip: file chunks are mostly incompressible and compressing every 64 KiB stream
      // message cost more CPU than the rest of a download's path together.
      acceptCompression: [],
      interceptors: this.interceptors,
      nodeOptions: this.identity.tlsOptionsFor(hostId),
    });
    const client = createClient(HostAgentService, transport);
    this.clients.set(hostId, { address, client });
    return client;
  }

  forget(hostId: string): void {
    this.clients.delete(hostId);
  }

  /**
   * Asks a host's agent to destroy all its sandboxes and exit (a forced host delete). Best
   * effort: an unreachable agent is logged, not an error, since its host is being deleted
   * anyway; the agent also stops on its own when heartbeats answer 404.
   */
  async terminate(hostId: string, address: string, timeoutMs = 30_000): Promise<boolean> {
    try {
      await this.get(hostId, address).terminate({}, { timeoutMs });
      this.log(`[hosts] host ${hostId}: agent terminated (its sandboxes destroyed)`);
      return true;
    } catch (err) {
      this.log(`[hosts] host ${hostId}: Terminate failed, its sandboxes may still run: ${err}`);
      return false;
    } finally {
      this.forget(hostId);
    }
  }
}
