/**
 * envd's forwarder of loopback-only services (packages/envd/src/ports): the /proc parser and the
 * plan on their own, the forwarder in-process (address-in-use race), and a real envd in a
 * throwaway network namespace whose veth end stands in for the guest's eth0.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import type { Logger } from "../../packages/envd/src/log.js";
import { PortForwarder } from "../../packages/envd/src/ports/forwarder.js";
import { planForwards } from "../../packages/envd/src/ports/plan.js";
import { parseProcNetTcp, type TcpListener } from "../../packages/envd/src/ports/proc-net.js";
import { ensureTestUser, envdCli } from "./support/harness.js";

const exec = promisify(execFile);

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function captureLogger(lines: LogLine[], base: Record<string, unknown> = {}): Logger {
  const at =
    (level: string) =>
    (msg: string, fields: Record<string, unknown> = {}) =>
      lines.push({ level, msg, fields: { ...base, ...fields } });
  return {
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (f) => captureLogger(lines, { ...base, ...f }),
  };
}

/** Connects, optionally sends `send` and half-closes, and collects everything until the peer ends. */
function talk(
  host: string,
  port: number,
  send?: string,
  timeoutMs = 3000,
): Promise<{ data: string } | { error: string }> {
  return new Promise((resolve) => {
    const s = connect({ host, port, allowHalfOpen: true });
    let data = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: "timeout" });
    }, timeoutMs);
    s.on("connect", () => {
      if (send !== undefined) s.end(send);
    });
    s.on("data", (d: Buffer) => {
      data += d.toString();
    });
    s.on("end", () => {
      clearTimeout(timer);
      s.end();
      resolve({ data });
    });
    s.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ error: e.code ?? e.message });
    });
  });
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 6000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    last = v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

describe("port forwarding: /proc/net/tcp parsing and the plan", () => {
  it("decodes LISTEN lines of tcp and tcp6 and skips other states", () => {
    const v4 = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1254589 1 0000 100 0 0 10 0",
      "   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1060 1 0000 100 0 0 10 0",
      "   2: 1500FEA9:C350 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1061 1 0000 100 0 0 10 0",
      "   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 1062 1 0000 100 0 0 10 0",
    ].join("\n");
    assert.deepEqual(parseProcNetTcp(v4, 4), [
      { address: "127.0.0.1", port: 8080, family: 4 },
      { address: "0.0.0.0", port: 80, family: 4 },
      { address: "169.254.0.21", port: 50000, family: 4 },
    ]);
    const v6 = [
      "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000 100 0 0 10 0",
      "   1: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000 100 0 0 10 0",
      "   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000 100 0 0 10 0",
      "   3: 000080FE00000000FF00000201000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000 100 0 0 10 0",
      "   4: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:9999 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0000 100 0 0 10 0",
    ].join("\n");
    assert.deepEqual(parseProcNetTcp(v6, 6), [
      { address: "::1", port: 8081, family: 6 },
      { address: "::", port: 22, family: 6 },
      { address: "::ffff:127.0.0.1", port: 8082, family: 6 },
      { address: "fe80::200:ff:0:1", port: 8083, family: 6 },
    ]);
  });

  it("forwards loopback-only ports, never a port listening elsewhere or excluded", () => {
    const l = (address: string, port: number): TcpListener => ({
      address,
      port,
      family: address.includes(":") ? 6 : 4,
    });
    const plan = planForwards({
      listeners: [
        l("127.0.0.1", 3000), // loopback only: forwarded
        l("::1", 3001), // IPv6 loopback only: forwarded to ::1
        l("::1", 3002), // both loopbacks: 127.0.0.1 preferred
        l("127.0.0.1", 3002),
        l("127.0.0.1", 3003), // also on the wildcard: already reachable
        l("0.0.0.0", 3003),
        l("127.0.0.1", 3004), // a user's listener on the external address: not shadowed
        l("169.254.0.21", 3004),
        l("127.0.0.1", 3005), // our own forward listener: kept
        l("169.254.0.21", 3005),
        l("127.0.0.1", 3006), // IPv6 wildcard (dual-stack): already reachable
        l("::", 3006),
        l("127.0.0.1", 49983), // envd's own port
        l("0.0.0.0", 8080), // not loopback at all
      ],
      externalAddress: "169.254.0.21",
      owned: new Set([3005]),
      exclude: new Set([49983]),
    });
    assert.deepEqual(
      [...plan.entries()],
      [
        [3000, "127.0.0.1"],
        [3001, "::1"],
        [3002, "127.0.0.1"],
        [3005, "127.0.0.1"],
      ],
    );
  });
});

describe("port forwarding: the forwarder in-process", () => {
  // 127.0.0.2 stands in for the external address (all of 127/8 is local); the socket table is
  // supplied by the test, so the race below is deterministic.
  const external = "127.0.0.2";
  let service: Server;
  let port = 0;
  const logs: LogLine[] = [];
  let listeners: TcpListener[] = [];
  let fw: PortForwarder;

  before(async () => {
    service = createServer((c) => c.end("from-service"));
    service.listen(0, "127.0.0.1");
    await once(service, "listening");
    const a = service.address();
    port = typeof a === "object" && a ? a.port : 0;
    fw = new PortForwarder({
      externalAddress: external,
      log: captureLogger(logs),
      readListeners: async () => listeners,
    });
  });
  after(async () => {
    await fw.stop();
    service.close();
  });

  it("copes with the port being taken on the external address between scan and listen", async () => {
    const blocker = createServer((c) => c.end("from-blocker"));
    blocker.listen(port, external);
    await once(blocker, "listening");
    // The scan still sees only the loopback listener (the blocker bound just after it).
    listeners = [{ address: "127.0.0.1", port, family: 4 }];
    await fw.scanNow();
    await fw.scanNow();
    assert.deepEqual(fw.forwardedPorts(), []);
    const warns = logs.filter((l) => l.msg === "cannot forward port");
    assert.equal(warns.length, 1, "logged once, not on every scan");
    assert.deepEqual(warns[0]?.fields, {
      component: "port-forward",
      port,
      address: external,
      code: "EADDRINUSE",
    });
    assert.deepEqual(await talk(external, port), { data: "from-blocker" });
    blocker.close();
    await once(blocker, "close");
    await fw.scanNow();
    assert.deepEqual(fw.forwardedPorts(), [port]);
    assert.deepEqual(await talk(external, port), { data: "from-service" });
  });

  it("closes the listener when the service leaves the socket table", async () => {
    listeners = [];
    await fw.scanNow();
    assert.deepEqual(fw.forwardedPorts(), []);
    assert.deepEqual(await talk(external, port), { error: "ECONNREFUSED" });
  });

  it("rescans at once when a connection finds the service gone", async () => {
    const gone = createServer();
    gone.listen(0, "127.0.0.1");
    await once(gone, "listening");
    const a = gone.address();
    const gonePort = typeof a === "object" && a ? a.port : 0;
    listeners = [{ address: "127.0.0.1", port: gonePort, family: 4 }];
    await fw.scanNow();
    assert.deepEqual(fw.forwardedPorts(), [gonePort]);
    gone.close();
    await once(gone, "close");
    listeners = [];
    // No timer runs (start() was never called): only the refused connection triggers the scan.
    const r = await talk(external, gonePort);
    assert.ok("error" in r, `the client is refused: ${JSON.stringify(r)}`);
    await until("the dead forward to close", async () =>
      fw.forwardedPorts().length === 0 ? true : undefined,
    );
    assert.ok(logs.some((l) => l.msg === "forwarded port refused the connection"));
  });
});

// ---------------------------------------------------------------------------------------------
// A real envd in its own network namespace. The namespace's veth end has a random link-local
// /30 address (the guest's eth0 stand-in); the test process reaches it over the veth's host end.

const suffix = randomBytes(3).toString("hex");
const NS = `pfwd-${suffix}`;
const HOST_VETH = `pfh${suffix}`;
const netBase = (randomBytes(1).readUInt8(0) % 64) * 4;
const netOctet = 100 + (randomBytes(1).readUInt8(0) % 100);
const GUEST = `169.254.${netOctet}.${netBase + 1}`;
const HOST = `169.254.${netOctet}.${netBase + 2}`;
const ENVD_PORT = 49983;

async function sh(argv: string[]): Promise<void> {
  const [file, ...args] = argv;
  await exec(file ?? "false", args, { timeout: 20_000 });
}

const SERVICE = `
const net = require("net");
const crypto = require("crypto");
const { H: host, P: port, M: mode, TAG: tag } = process.env;
const s = net.createServer({ allowHalfOpen: true }, (c) => {
  if (mode === "tag") { c.end(tag); return; }
  if (mode === "echo") {
    c.on("data", (d) => c.write(d.toString().toUpperCase()));
    c.on("end", () => c.end("|done"));
    return;
  }
  // sink: read nothing for 2 s, then hash everything and answer with the digest.
  const h = crypto.createHash("sha256");
  c.pause();
  setTimeout(() => c.resume(), 2000);
  c.on("data", (d) => h.update(d));
  c.on("end", () => c.end(h.digest("hex")));
});
s.listen(Number(port), host, () => console.log("up"));
`;

/** A TCP service inside the namespace. */
async function serve(
  host: string,
  port: number,
  mode: "tag" | "echo" | "sink",
  tag = "",
): Promise<ChildProcess> {
  const child = spawn("ip", ["netns", "exec", NS, process.execPath, "-e", SERVICE], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, H: host, P: String(port), M: mode, TAG: tag },
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`service ${host}:${port} exited ${code}`)));
  });
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGKILL");
  await once(child, "exit");
}

describe("port forwarding: envd in a network namespace", { timeout: 120_000 }, () => {
  let envd: ChildProcess;
  let envdLog = "";
  const children: ChildProcess[] = [];
  const forwardedLogged = (port: number) =>
    envdLog
      .split("\n")
      .some((l) => l.includes('"msg":"port forwarded"') && l.includes(`"port":${port},`));

  before(async () => {
    ensureTestUser();
    await sh(["ip", "netns", "add", NS]);
    await sh(["ip", "-n", NS, "link", "set", "lo", "up"]);
    await sh(["ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", "eth0", "netns", NS]);
    await sh(["ip", "addr", "add", `${HOST}/30`, "dev", HOST_VETH]);
    await sh(["ip", "link", "set", HOST_VETH, "up"]);
    await sh(["ip", "-n", NS, "addr", "add", `${GUEST}/30`, "dev", "eth0"]);
    await sh(["ip", "-n", NS, "link", "set", "eth0", "up"]);
    // envd on loopback only, so its own port is exactly what a forwarder must leave alone.
    envd = spawn(
      "ip",
      [
        "netns",
        "exec",
        NS,
        process.execPath,
        envdCli,
        "--host",
        "127.0.0.1",
        "--port",
        String(ENVD_PORT),
        "--forward-localhost",
        GUEST,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    envd.stderr?.on("data", (d: Buffer) => {
      envdLog += d.toString();
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`envd did not start: ${envdLog}`)), 20_000);
      envd.stdout?.on("data", (d: Buffer) => {
        if (d.toString().includes("envd listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      envd.once("exit", (code) => reject(new Error(`envd exited ${code}: ${envdLog}`)));
    });
  });

  after(async () => {
    for (const c of children) await stopChild(c).catch(() => undefined);
    if (envd) await stopChild(envd).catch(() => undefined);
    await sh(["ip", "netns", "delete", NS]).catch((e: unknown) =>
      console.error(`cannot delete ${NS}:`, e),
    );
    await sh(["ip", "link", "delete", HOST_VETH]).catch(() => undefined);
  });

  it("reaches a service bound to 127.0.0.1 at the external address", async () => {
    children.push(await serve("127.0.0.1", 8101, "tag", "loopback-8101"));
    const r = await until("8101 to be forwarded", async () => {
      const x = await talk(GUEST, 8101);
      return "data" in x ? x : undefined;
    });
    assert.deepEqual(r, { data: "loopback-8101" });
    assert.ok(forwardedLogged(8101), envdLog);
  });

  it("forwards a service on ::1 too", async () => {
    children.push(await serve("::1", 8102, "tag", "v6-8102"));
    const r = await until("8102 to be forwarded", async () => {
      const x = await talk(GUEST, 8102);
      return "data" in x ? x : undefined;
    });
    assert.deepEqual(r, { data: "v6-8102" });
  });

  it("passes a half-close each way", async () => {
    children.push(await serve("127.0.0.1", 8103, "echo"));
    const r = await until("8103 to be forwarded", async () => {
      const x = await talk(GUEST, 8103, "hello world");
      return "data" in x ? x : undefined;
    });
    // The service only answers "|done" after our FIN reached it, and we only see the end of the
    // stream after its FIN reached us.
    assert.deepEqual(r, { data: "HELLO WORLD|done" });
  });

  it("applies backpressure: a service that does not read stalls the client, nothing is lost", async () => {
    children.push(await serve("127.0.0.1", 8104, "sink"));
    await until("8104 to be forwarded", async () => (forwardedLogged(8104) ? true : undefined));
    const total = 96 << 20;
    const chunk = randomBytes(1 << 20);
    const hash = createHash("sha256");
    const s = connect({ host: GUEST, port: 8104, allowHalfOpen: true });
    await once(s, "connect");
    let written = 0;
    let reply = "";
    s.on("data", (d: Buffer) => {
      reply += d.toString();
    });
    const ended = once(s, "end");
    const writer = (async () => {
      while (written < total) {
        hash.update(chunk);
        written += chunk.length;
        if (!s.write(chunk)) await once(s, "drain");
      }
      s.end();
    })();
    await sleep(1500);
    const stalledAt = written;
    assert.ok(
      stalledAt < total / 2,
      `only socket buffers' worth is accepted while the service does not read (${stalledAt >> 20} MiB)`,
    );
    await writer;
    await ended;
    assert.equal(reply, hash.digest("hex"));
  });

  it("does not forward a service on 0.0.0.0, nor shadow one on the external address", async () => {
    children.push(await serve("0.0.0.0", 8105, "tag", "wildcard-8105"));
    children.push(await serve(GUEST, 8106, "tag", "external-8106"));
    children.push(await serve("127.0.0.1", 8106, "tag", "loopback-8106"));
    await sleep(2500);
    assert.ok(!forwardedLogged(8105), envdLog);
    assert.ok(!forwardedLogged(8106), envdLog);
    assert.deepEqual(await talk(GUEST, 8105), { data: "wildcard-8105" });
    assert.deepEqual(await talk(GUEST, 8106), { data: "external-8106" });
  });

  it("never forwards envd's own port", async () => {
    assert.ok(!forwardedLogged(ENVD_PORT), envdLog);
    assert.deepEqual(await talk(GUEST, ENVD_PORT), { error: "ECONNREFUSED" });
  });

  it("closes the forward when the service goes away, freeing the port", async () => {
    const first = children.shift();
    assert.ok(first);
    await stopChild(first);
    await until("8101's forward to close", async () => {
      const x = await talk(GUEST, 8101);
      return "error" in x && x.error === "ECONNREFUSED" ? x : undefined;
    });
    assert.match(envdLog, /"msg":"port forward closed".*"port":8101/);
    // The external address is free again: a new service can take the port on the wildcard.
    children.push(await serve("0.0.0.0", 8101, "tag", "wildcard-8101"));
    assert.deepEqual(await talk(GUEST, 8101), { data: "wildcard-8101" });
  });
});
