import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { ensureHostFirewall } from "@nestbox/agent/network/host-firewall";
import {
  createSandboxNetwork,
  destroySandboxNetwork,
  netnsExec,
  type SandboxNetwork,
} from "@nestbox/agent/network/netns";

const exec = promisify(execFile);
const suffix = randomBytes(3).toString("hex");
const slotBase = 9000 + (randomBytes(2).readUInt16BE(0) % 500) * 2;

/** Tries a TCP connection from inside a namespace; resolves "connected" or the failure kind. */
async function probe(ns: string, host: string, port: number): Promise<string> {
  const script = `const s=require("net").connect({host:${JSON.stringify(host)},port:${port}});s.setTimeout(1500);s.on("connect",()=>{console.log("connected");s.destroy()});s.on("timeout",()=>{console.log("timeout");s.destroy()});s.on("error",e=>{console.log(e.code);s.destroy()})`;
  const [file, ...args] = netnsExec(ns, [process.execPath, "-e", script]);
  const { stdout } = await exec(file ?? "ip", args, { timeout: 10_000 });
  return stdout.trim();
}

/** A TCP server on 0.0.0.0 inside the namespace, standing in for envd and user ports. */
function serveInNamespace(ns: string, port: number): ChildProcess {
  const script = `require("net").createServer(c=>c.end("hi")).listen(${port},"0.0.0.0",()=>console.log("up"))`;
  const [file, ...args] = netnsExec(ns, [process.execPath, "-e", script]);
  return spawn(file ?? "ip", args, { stdio: ["ignore", "pipe", "inherit"] });
}

describe("sandbox network isolation", () => {
  const nets: SandboxNetwork[] = [];
  const servers: ChildProcess[] = [];
  let hostServer: Server;
  let hostPort = 0;

  before(async () => {
    await ensureHostFirewall({ forwarding: false });
    for (const [i, allowInternetAccess] of [true, false].entries()) {
      nets.push(
        await createSandboxNetwork({
          namespace: `nbxiso-${suffix}-${i}`,
          hostVeth: `nbxi${suffix}${i}`,
          slot: slotBase + i,
          guestLink: "local",
          allowInternetAccess,
        }),
      );
    }
    for (const n of nets) {
      const child = serveInNamespace(n.namespace, 49983);
      servers.push(child);
      await new Promise<void>((resolve, reject) => {
        child.stdout?.once("data", () => resolve());
        child.once("exit", (code) => reject(new Error(`server exited ${code}`)));
      });
    }
    // Stands in for the host agent's and the control plane's ports: bound to every address.
    hostServer = createServer((c) => c.end("host"));
    await new Promise<void>((r) => hostServer.listen(0, "0.0.0.0", r));
    const addr = hostServer.address();
    hostPort = typeof addr === "object" && addr ? addr.port : 0;
  });

  after(async () => {
    for (const s of servers) s.kill("SIGKILL");
    hostServer?.close();
    for (const n of nets) await destroySandboxNetwork(n);
  });

  it("lets the host reach each sandbox's service through its sandbox address", async () => {
    // From the host's own namespace (no netns exec): a plain connection.
    for (const n of nets) {
      const { stdout } = await exec(process.execPath, [
        "-e",
        `require("net").connect(49983,${JSON.stringify(n.sandboxAddress)}).on("data",d=>{console.log(String(d));process.exit(0)}).on("error",e=>{console.log(e.code);process.exit(0)})`,
      ]);
      assert.equal(stdout.trim(), "hi", n.namespace);
    }
  });

  it("lets a sandbox reach its own services (the probe works)", async () => {
    const a = nets[0] as SandboxNetwork;
    assert.equal(await probe(a.namespace, "127.0.0.1", 49983), "connected");
  });

  for (const [name, index] of [
    ["with internet access", 0],
    ["without internet access", 1],
  ] as const) {
    it(`keeps a sandbox ${name} from the host's ports and from other sandboxes`, async () => {
      const self = nets[index] as SandboxNetwork;
      const other = nets[1 - index] as SandboxNetwork;
      const targets: [string, string, number][] = [
        ["host via its own veth", self.hostAddress, hostPort],
        ["host via another sandbox's veth", other.hostAddress, hostPort],
        ["another sandbox's address", other.sandboxAddress, 49983],
      ];
      for (const [what, host, port] of targets) {
        const result = await probe(self.namespace, host, port);
        assert.notEqual(result, "connected", `${what} (${host}:${port}) must be unreachable`);
      }
    });
  }
});
