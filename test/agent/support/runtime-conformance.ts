/**
 * The runtime conformance suite: the same behaviour, through the real host agent's RPC surface,
 * for every runtime. Each runtime's test file calls `runtimeConformance` with its options.
 *
 * One file (~580 lines): it is the contract every runtime passes, and reads best in one place.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import { type AgentProcess, startAgent } from "./agent-harness.js";

export interface ConformanceOptions {
  runtime: "qemu" | "namespace";
  /** One letter: this run's namespaces, veths and state directories. */
  instance: string;
  slots: string;
  /** Whether a snapshot keeps memory (running processes survive into new sandboxes). */
  memorySnapshots: boolean;
  dataDir?: string;
}

const DATA_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";

async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e).code;
  }
  return undefined;
}

/** The agent instance's sandbox network namespaces that exist now. */
export function namespacesOf(instance: string): string[] {
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(`nbx${instance}-`));
}

export function runtimeConformance(o: ConformanceOptions): void {
  const dataDir = o.dataDir ?? DATA_DIR;
  const args = [
    "--runtime",
    o.runtime,
    "--instance",
    o.instance,
    "--slots",
    o.slots,
    "--memory-capacity-mb",
    "8192",
    "--data-dir",
    dataDir,
  ];
  const templates: string[] = [];

  describe(`runtime conformance: ${o.runtime}`, { timeout: 900_000 }, () => {
    let agent: AgentProcess;
    const exec = async (id: string, script: string, timeoutSec = 30) => {
      const r = await agent.client.exec({
        sandboxId: id,
        cmd: "/bin/bash",
        args: ["-c", script],
        timeoutSec,
      });
      return {
        out: Buffer.from(r.stdout).toString(),
        err: Buffer.from(r.stderr).toString(),
        code: r.exitCode,
      };
    };
    const logsAbout = (id: string) =>
      agent
        .logs()
        .split("\n")
        .filter((l) => l.includes(id) || l.includes('"warn"') || l.includes('"error"'))
        .slice(-15)
        .join("\n");
    const create = async (extra: Record<string, unknown> = {}) =>
      (await agent.client.createSandbox({ template: "base", memoryMb: 512, vcpus: 1, ...extra }))
        .sandboxId;

    before(async () => {
      agent = await startAgent(args);
    });
    after(async () => {
      if (agent) {
        const { sandboxes } = await agent.client.listSandboxes({}).catch(() => ({ sandboxes: [] }));
        for (const s of sandboxes)
          await agent.client.destroySandbox({ sandboxId: s.sandboxId }).catch(() => undefined);
        for (const t of templates)
          await agent.client.deleteSnapshot({ name: t }).catch(() => undefined);
        await agent.stop();
      }
    });

    it("creates a sandbox and runs commands as its default user with its env vars", async () => {
      const id = await create({ envVars: { NBX_CONF: "yes" }, metadata: { suite: "conformance" } });
      assert.match(id, /^[a-z0-9]{20}$/);
      const sentAt = Date.now();
      const clock = Number((await exec(id, "date +%s.%N")).out);
      assert.ok(
        Math.abs(clock - (sentAt + Date.now()) / 2000) < 3,
        `guest clock ${clock} is current after create`,
      );
      const r = await exec(id, 'id -un; echo "$NBX_CONF"; echo oops >&2; exit 3');
      assert.deepEqual(r, { out: "user\nyes\n", err: "oops\n", code: 3 });
      const { sandboxes } = await agent.client.listSandboxes({});
      const mine = sandboxes.find((s) => s.sandboxId === id);
      assert.equal(mine?.status, "running");
      assert.deepEqual(mine?.metadata, { suite: "conformance" });
      assert.equal(mine?.runtime, o.runtime);
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("streams output, and kills a command at its timeout", async () => {
      const id = await create();
      const kinds: string[] = [];
      let out = "";
      for await (const ev of agent.client.execStream({
        sandboxId: id,
        cmd: "/bin/sh",
        args: ["-c", "echo a; sleep 0.2; echo b"],
      })) {
        kinds.push(ev.event.case ?? "");
        if (ev.event.case === "data" && ev.event.value.output.case === "stdout")
          out += Buffer.from(ev.event.value.output.value).toString();
      }
      assert.equal(kinds[0], "start");
      assert.equal(kinds.at(-1), "end");
      assert.equal(out, "a\nb\n");
      const t0 = Date.now();
      assert.equal(await codeOf(exec(id, "sleep 30", 1)), Code.DeadlineExceeded);
      assert.ok(Date.now() - t0 < 10_000);
      // The kill follows the deadline asynchronously (envd sees the cancelled stream): poll.
      let ps = await exec(id, "pgrep -x sleep || true");
      for (let i = 0; i < 25 && ps.out !== ""; i++) {
        await sleep(200);
        ps = await exec(id, "pgrep -x sleep || true");
      }
      assert.equal(ps.out, "", "the timed-out command was killed");
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("holds a command back, not its output, while a stream's reader stalls", async () => {
      const id = await create();
      const SIZE = 64 << 20;
      const rssMiB = () =>
        Number(
          /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.child.pid}/status`, "utf8"))?.[1],
        ) / 1024;
      let bytes = 0;
      let growth = 0;
      let stalled = false;
      for await (const ev of agent.client.execStream({
        sandboxId: id,
        cmd: "head",
        args: ["-c", String(SIZE), "/dev/zero"],
        noTimeout: true,
      })) {
        if (ev.event.case === "data") bytes += ev.event.value.output.value?.length ?? 0;
        if (bytes > 0 && !stalled) {
          stalled = true;
          const before = rssMiB();
          let peak = before;
          for (let i = 0; i < 20; i++) {
            await sleep(100);
            peak = Math.max(peak, rssMiB());
          }
          growth = peak - before;
        }
      }
      assert.equal(bytes, SIZE, "every byte arrives once the reader goes on");
      assert.ok(growth < 40, `the agent held ${growth.toFixed(1)} MiB for a stalled reader`);
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("writes and reads files whole and in 64 KiB chunks", async () => {
      const id = await create();
      await agent.client.writeFile({
        sandboxId: id,
        path: "/tmp/small.txt",
        content: Buffer.from("hello"),
      });
      assert.equal(
        Buffer.from(
          (await agent.client.readFile({ sandboxId: id, path: "/tmp/small.txt" })).content,
        ).toString(),
        "hello",
      );
      const big = Buffer.alloc(1_000_003);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      async function* upload() {
        yield {
          content: { case: "meta" as const, value: { sandboxId: id, path: "/tmp/big.bin" } },
        };
        for (let off = 0; off < big.length; off += 65_536) {
          yield { content: { case: "chunk" as const, value: big.subarray(off, off + 65_536) } };
        }
      }
      await agent.client.writeFileStream(upload());
      const parts: Buffer[] = [];
      for await (const r of agent.client.readFileStream({ sandboxId: id, path: "/tmp/big.bin" })) {
        assert.ok(r.chunk.length <= 65_536);
        parts.push(Buffer.from(r.chunk));
      }
      assert.ok(Buffer.concat(parts).equals(big));
      assert.equal(
        await codeOf(agent.client.readFile({ sandboxId: id, path: "/nope" })),
        Code.NotFound,
      );
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("runs background processes, terminals and file operations through the agent", async () => {
      const id = await create();
      const c = agent.client;
      const ticker = await c.startProcess({
        sandboxId: id,
        cmd: "/bin/sh",
        args: ["-c", "while true; do echo tick; sleep 0.2; done"],
        tag: "ticker",
      });
      const listed = (await c.listProcesses({ sandboxId: id })).processes;
      assert.ok(
        listed.some((p) => p.pid === ticker.pid && p.tag === "ticker"),
        JSON.stringify(listed),
      );
      const abort = new AbortController();
      let seen = "";
      try {
        for await (const ev of c.connectProcess(
          { sandboxId: id, pid: ticker.pid },
          { signal: abort.signal },
        )) {
          if (ev.event.case === "data" && ev.event.value.output.case === "stdout")
            seen += Buffer.from(ev.event.value.output.value).toString();
          if (seen.includes("tick")) break;
        }
      } finally {
        abort.abort();
      }
      assert.match(seen, /tick/);
      await c.killProcess({ sandboxId: id, pid: ticker.pid });
      await sleep(300);
      assert.ok(
        !(await c.listProcesses({ sandboxId: id })).processes.some((p) => p.pid === ticker.pid),
      );
      assert.equal(await codeOf(c.killProcess({ sandboxId: id, pid: 999_999 })), Code.NotFound);

      const cat = await c.startProcess({ sandboxId: id, cmd: "/bin/cat" });
      const output = (async () => {
        let out = "";
        let code = -2;
        for await (const ev of c.connectProcess({ sandboxId: id, pid: cat.pid })) {
          if (ev.event.case === "data" && ev.event.value.output.case === "stdout")
            out += Buffer.from(ev.event.value.output.value).toString();
          if (ev.event.case === "end") code = ev.event.value.exitCode;
        }
        return { out, code };
      })();
      await sleep(300);
      await c.sendProcessInput({
        sandboxId: id,
        pid: cat.pid,
        data: Buffer.from("hello stdin\n"),
        closeStdin: true,
      });
      assert.deepEqual(await output, { out: "hello stdin\n", code: 0 });

      let screen = "";
      let ptyPid = 0;
      let ended = false;
      for await (const ev of c.startPty({ sandboxId: id, cols: 80, rows: 24 })) {
        if (ev.event.case === "start") {
          ptyPid = ev.event.value.pid;
          await c.resizePty({ sandboxId: id, pid: ptyPid, cols: 120, rows: 50 });
          await c.sendProcessInput({
            sandboxId: id,
            pid: ptyPid,
            pty: true,
            data: Buffer.from("stty size; echo $((6*7)); exit\n"),
          });
        }
        if (ev.event.case === "data") screen += Buffer.from(ev.event.value).toString();
        if (ev.event.case === "end") ended = true;
      }
      assert.ok(ended);
      assert.match(screen, /50 120/);
      assert.match(screen, /\r\n42\r\n/);

      const made = await c.makeDir({ sandboxId: id, path: "/tmp/nbx-dir/inner" });
      assert.equal(made.entry?.type, "dir");
      await c.writeFile({
        sandboxId: id,
        path: "/tmp/nbx-dir/inner/f.txt",
        content: Buffer.from("x"),
      });
      const listing = (await c.listDir({ sandboxId: id, path: "/tmp/nbx-dir", depth: 2 })).entries
        .map((e) => `${e.type}:${e.path}`)
        .sort();
      assert.deepEqual(listing, ["dir:/tmp/nbx-dir/inner", "file:/tmp/nbx-dir/inner/f.txt"]);
      const moved = await c.movePath({
        sandboxId: id,
        source: "/tmp/nbx-dir/inner/f.txt",
        destination: "/tmp/nbx-dir/g.txt",
      });
      assert.equal(moved.entry?.path, "/tmp/nbx-dir/g.txt");
      await c.removePath({ sandboxId: id, path: "/tmp/nbx-dir" });
      assert.equal(await codeOf(c.listDir({ sandboxId: id, path: "/tmp/nbx-dir" })), Code.NotFound);
      await c.destroySandbox({ sandboxId: id });
    });

    it("proxies HTTP to a sandbox port and explains what it cannot reach", async () => {
      const id = await create();
      await agent.client.startProcess({
        sandboxId: id,
        cmd: "/usr/bin/python3",
        args: ["-m", "http.server", "8000", "--bind", "0.0.0.0", "--directory", "/etc"],
      });
      let res: Response | undefined;
      for (let i = 0; i < 100; i++) {
        res = await fetch(`${agent.url}/proxy/${id}/8000/hostname`, { headers: agent.headers });
        if (res.status === 200) break;
        await sleep(200);
      }
      assert.equal(res?.status, 200);
      assert.ok((await res?.text())?.trim().length, "served the guest's /etc/hostname");
      const closed = await fetch(`${agent.url}/proxy/${id}/8001/`, { headers: agent.headers });
      assert.equal(closed.status, 502);
      assert.equal(
        ((await closed.json()) as { message: string }).message,
        "The sandbox is running but port is not open",
      );
      const unknown = await fetch(`${agent.url}/proxy/${"z".repeat(20)}/8000/`, {
        headers: agent.headers,
      });
      assert.equal(unknown.status, 502);
      assert.equal(
        ((await unknown.json()) as { message: string }).message,
        "The sandbox was not found",
      );
      // A request waiting on a sandbox that is destroyed ends at once (a vanished VM sends no
      // FIN or RST, so the proxy must cut the connection itself).
      await agent.client.startProcess({
        sandboxId: id,
        cmd: "/usr/bin/python3",
        args: [
          "-c",
          "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',8002))\ns.listen()\nc=s.accept()\ntime.sleep(600)",
        ],
      });
      for (let i = 0; i < 100; i++) {
        if ((await exec(id, "ss -ltn | grep -c ':8002 ' || true")).out.trim() === "1") break;
        await sleep(200);
      }
      const pending = fetch(`${agent.url}/proxy/${id}/8002/`, { headers: agent.headers });
      await sleep(500);
      const destroyedAt = Date.now();
      await agent.client.destroySandbox({ sandboxId: id });
      const hung = await Promise.race([pending, sleep(15_000).then(() => undefined)]);
      assert.ok(hung, "a proxied request outlived its sandbox's destroy by 15 s");
      assert.equal(hung.status, 502);
      assert.ok(Date.now() - destroyedAt < 15_000);
    });

    it("pauses and resumes keeping a running process and a file", async () => {
      const id = await create();
      await exec(
        id,
        "echo kept > /tmp/kept.txt; nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done' >/dev/null 2>&1 &",
      );
      await sleep(1000);
      await agent.client.pauseSandbox({ sandboxId: id });
      assert.equal(
        (await agent.client.listSandboxes({})).sandboxes.find((s) => s.sandboxId === id)?.status,
        "paused",
      );
      assert.equal(await codeOf(exec(id, "true")), Code.FailedPrecondition);
      assert.equal(
        await codeOf(agent.client.pauseSandbox({ sandboxId: id })),
        Code.FailedPrecondition,
      );
      await agent.client.resumeSandbox({ sandboxId: id, timeoutSec: 0 });
      const before = Number((await exec(id, "cat /tmp/counter")).out);
      await sleep(1000);
      // The guest's time is compared with the midpoint of the host's time around the command, in
      // sub-second resolution: a slow exec under load must not look like a wrong clock.
      const sentAt = Date.now();
      const r = await exec(id, "cat /tmp/counter; cat /tmp/kept.txt; date +%s.%N");
      const hostMid = (sentAt + Date.now()) / 2000;
      const [after, kept, guestTime] = r.out.trim().split("\n");
      const skew = Number(guestTime) - hostMid;
      assert.ok(
        Math.abs(skew) < 3,
        `guest clock off by ${skew.toFixed(1)} s after resume; agent said:\n${logsAbout(id)}`,
      );
      assert.ok(Number(after) > before, `counter advanced after resume (${before} → ${after})`);
      assert.equal(kept, "kept");
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("snapshots a sandbox into a template and starts new sandboxes from it", async () => {
      const id = await create();
      await exec(
        id,
        "echo from-snapshot > /home/user/snap.txt; nohup sleep 4242 >/dev/null 2>&1 &",
      );
      const name = `conf-${o.instance}-${Date.now().toString(36)}`;
      templates.push(name);
      const snap = await agent.client.createSnapshot({ sandboxId: id, name });
      assert.ok(snap.sizeBytes > 0n);
      assert.equal(
        await codeOf(agent.client.destroySandbox({ sandboxId: id })),
        Code.NotFound,
        "snapshotting ends the sandbox",
      );
      const child = await create({ template: name });
      const r = await exec(
        child,
        "cat /home/user/snap.txt; pgrep -f 'sleep [4]242' >/dev/null && echo running || echo gone",
      );
      assert.equal(r.out, `from-snapshot\n${o.memorySnapshots ? "running" : "gone"}\n`);
      assert.equal(
        await codeOf(agent.client.deleteSnapshot({ name })),
        Code.FailedPrecondition,
        "template in use",
      );
      await agent.client.destroySandbox({ sandboxId: child });
    });

    it("flattens a sandbox's disk into an image-only template", async () => {
      const id = await create();
      await exec(id, "echo flat > /home/user/flat.txt; sync");
      const name = `flat-${o.instance}-${Date.now().toString(36)}`;
      templates.push(name);
      const res = await agent.client.flattenRootfs({ sandboxId: id, name });
      assert.ok(res.sizeBytes > 0n);
      const child = await create({ template: name });
      assert.equal((await exec(child, "cat /home/user/flat.txt")).out, "flat\n");
      await agent.client.destroySandbox({ sandboxId: child });
      await agent.client.deleteSnapshot({ name });
    });

    it("auto-pauses an idle sandbox after its timeout and reports it once", async () => {
      const id = await create({ timeoutSec: 2 });
      await agent.client.listSandboxes({});
      const deadline = Date.now() + 30_000;
      let reported: string[] = [];
      while (Date.now() < deadline) {
        const l = await agent.client.listSandboxes({});
        reported = reported.concat(l.autoPausedSandboxIds);
        if (l.sandboxes.find((s) => s.sandboxId === id)?.status === "paused") break;
        await sleep(500);
      }
      reported = reported.concat((await agent.client.listSandboxes({})).autoPausedSandboxIds);
      assert.deepEqual(
        reported.filter((x) => x === id),
        [id],
      );
      assert.deepEqual((await agent.client.listSandboxes({})).autoPausedSandboxIds, []);
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("refuses what does not fit and rejects bad requests", async () => {
      assert.equal(await codeOf(create({ memoryMb: 9000 })), Code.ResourceExhausted);
      assert.equal(await codeOf(create({ template: "../etc" })), Code.InvalidArgument);
      assert.equal(await codeOf(create({ sandboxId: "UPPER" })), Code.InvalidArgument);
      assert.equal(
        await codeOf(agent.client.destroySandbox({ sandboxId: "a".repeat(20) })),
        Code.NotFound,
      );
      assert.equal(
        await codeOf(agent.client.exec({ sandboxId: "", cmd: "true" })),
        Code.InvalidArgument,
      );
      assert.equal(
        await codeOf(agent.client.getSandboxMetrics({ sandboxId: "a".repeat(20), range: "1y" })),
        Code.InvalidArgument,
      );
    });

    it("samples metrics into rings", async () => {
      const id = await create();
      await sleep(1600);
      const { points } = await agent.client.getSandboxMetrics({ sandboxId: id, range: "10m" });
      assert.ok(points.length >= 2, `got ${points.length} points`);
      assert.ok((points.at(-1)?.memBytes ?? 0n) > 0n);
      const flushed = await agent.client.flushSandboxMetrics({ sandboxId: id });
      assert.ok(flushed.points10m.length >= 2);
      assert.equal(
        (await agent.client.getSandboxMetrics({ sandboxId: id, range: "10m" })).points.length < 2,
        true,
      );
      await agent.client.destroySandbox({ sandboxId: id });
    });

    it("isolates sandboxes from the host and from each other", async () => {
      const a = await create({ allowInternetAccess: false });
      const b = await create();
      const host: Server = createServer((c) => c.end("host"));
      await new Promise<void>((r) => host.listen(0, "0.0.0.0", r));
      const port = (host.address() as { port: number }).port;
      try {
        const list = (await agent.client.listSandboxes({})).sandboxes;
        const ipB = list.find((s) => s.sandboxId === b)?.hostIp ?? "";
        const hostSide = (ip: string) =>
          ip.replace(/\.(\d+)$/, (_, n: string) => `.${Number(n) - 1}`);
        const probe = (ip: string, p: number) =>
          `timeout 3 bash -c 'echo > /dev/tcp/${ip}/${p}' 2>/dev/null && echo open || echo closed`;
        const ipA = list.find((s) => s.sandboxId === a)?.hostIp ?? "";
        const r = await exec(
          a,
          [probe(hostSide(ipA), port), probe(hostSide(ipB), port), probe(ipB, 49983)].join("; "),
        );
        assert.equal(
          r.out,
          "closed\nclosed\nclosed\n",
          "host ports and the other sandbox are unreachable",
        );
        const self = await exec(a, probe("127.0.0.1", 49983));
        assert.equal(self.out, "open\n", "the probe itself works");
      } finally {
        host.close();
        await agent.client.destroySandbox({ sandboxId: a });
        await agent.client.destroySandbox({ sandboxId: b });
      }
    });

    it("re-adopts running and paused sandboxes after the agent is killed, and cleans up dead ones", async () => {
      const running = await create();
      await exec(running, "echo survivor > /tmp/s.txt");
      const paused = await create();
      await agent.client.pauseSandbox({ sandboxId: paused });
      const doomed = await create();
      const doomedNs = `nbx${o.instance}-${doomed}`;
      assert.ok(namespacesOf(o.instance).includes(doomedNs));
      await agent.kill();
      // The doomed sandbox's runtime dies while no agent watches.
      const pids = execFileSync("ip", ["netns", "pids", doomedNs], { encoding: "utf8" })
        .split(/\s+/)
        .filter(Boolean);
      for (const pid of pids) {
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch (err) {
          // Short-lived processes (a forwarder scan, a shell) may end between listing and kill.
          if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
        }
      }
      if (o.runtime === "namespace")
        execFileSync("sh", ["-c", `pkill -9 -f "[s]andboxes/${o.instance}/${doomed}" || true`]);
      agent = await startAgent(args);
      const ids = (await agent.client.listSandboxes({})).sandboxes.map((s) => s.sandboxId);
      assert.ok(ids.includes(running) && ids.includes(paused), "survivors re-adopted");
      assert.ok(!ids.includes(doomed), "the dead one is gone");
      assert.ok(!namespacesOf(o.instance).includes(doomedNs), "and its namespace removed");
      assert.ok(!existsSync(`${dataDir}/sandboxes/${o.instance}/${doomed}`), "and its directory");
      assert.equal((await exec(running, "cat /tmp/s.txt")).out, "survivor\n");
      await agent.client.resumeSandbox({ sandboxId: paused });
      assert.equal((await exec(paused, "echo ok")).out, "ok\n");
    });

    it("terminate destroys everything and leaves nothing behind", async () => {
      await create();
      await agent.client.terminate({});
      await new Promise((r) => agent.child.once("exit", r));
      assert.deepEqual(namespacesOf(o.instance), []);
      const dirs = existsSync(`${dataDir}/sandboxes/${o.instance}`)
        ? readdirSync(`${dataDir}/sandboxes/${o.instance}`)
        : [];
      assert.deepEqual(dirs, []);
      agent = await startAgent(args);
    });
  });
}
