import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { HostAgentService } from "@nestbox/proto/hostagent";
import type { AgentClient } from "../services/sandbox-access.js";

/**
 * One Connect client per host address. Transports keep HTTP/1.1 connections alive, so reusing
 * them matters for exec round trips; a host that re-registers with a new address gets a new one.
 */
export class AgentClients {
  private readonly clients = new Map<string, { address: string; client: AgentClient }>();

  get(hostId: string, address: string): AgentClient {
    const cached = this.clients.get(hostId);
    if (cached && cached.address === address) return cached.client;
    // Binary protobuf: file chunks would otherwise travel base64-encoded in JSON.
    const transport = createConnectTransport({
      baseUrl: address,
      httpVersion: "1.1",
      useBinaryFormat: true,
    });
    const client = createClient(HostAgentService, transport);
    this.clients.set(hostId, { address, client });
    return client;
  }

  forget(hostId: string): void {
    this.clients.delete(hostId);
  }
}
