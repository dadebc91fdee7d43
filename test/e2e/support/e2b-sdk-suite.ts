/**
 * Issue 5's acceptance cases: the unmodified npm `e2b` SDK against a Nestbox control plane (its
 * E2B REST face and its sandbox proxy, one origin). The same cases run for each SDK generation
 * handed to `e2bSdkCases`; `SdkUnderTest` says where an older SDK differs.
 *
 * Two sandboxes per SDK (the suite runs under TCG): `main` carries the cases in order, each one
 * leaving it as the next expects; `other` exists for the list cases and is then shortened until
 * it expires.
 *
 * One file (~740 lines) because the cases are one ordered story on one sandbox per SDK.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as E2b from "e2b";
import type { CommandHandle, FilesystemEvent, Sandbox, SandboxInfo } from "e2b";
import { GUEST_WEBSOCKET_SOURCE } from "../../support/guest-websocket.js";
import { until } from "./cli-process.js";

export type SdkModule = typeof E2b;

export interface SdkUnderTest {
  /** Shown in the test names, e.g. "e2b 2.51.0". */
  name: string;
  /** The SDK's module (older generations are cast to the newest one's types). */
  sdk: SdkModule;
  /**
   * `connect` only ever extends the end time (2.51: POST /v2/sandboxes/{id}/connect). SDKs ≤ 2.5
   * connect with POST /sandboxes/{id}/timeout, which sets it exactly, so it can shorten.
   */
  connectNeverShrinks: boolean;
  /** `files.writeFiles` exists (newer SDKs); older ones take an array in `files.write`. */
  hasWriteFiles: boolean;
  /** `sbx.pause()` exists (newer SDKs); older ones only have `betaPause()`. */
  hasPause: boolean;
  /** The error class name `connect` throws for a killed sandbox. */
  notFoundName: "SandboxNotFoundError" | "NotFoundError";
}

export interface SuiteTarget {
  /** The control plane's origin: the E2B API and the sandbox proxy. */
  apiUrl: string;
}

const HOME = "/home/user";
const SERVER_SCRIPT = `${HOME}/nbx-e2b-server.cjs`;

/**
 * Runs in the guest: answers every HTTP request with what it saw (and a digest of the body, to
 * check streaming uploads), and echoes WebSocket text frames.
 */
const serverSource = `
const http = require("node:http");
const crypto = require("node:crypto");
const bind = process.argv[2];
const port = Number(process.argv[3]);
const server = http.createServer((req, res) => {
  const hash = crypto.createHash("sha256");
  let length = 0;
  req.on("data", (d) => { hash.update(d); length += d.length; });
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ bind, port, method: req.method, url: req.url, host: req.headers.host,
      bodyLength: length, bodySha256: hash.digest("hex") }));
  });
});
server.on("upgrade", (req, socket) => {
  socket.on("error", (e) => console.error("ws socket: " + e.message));
  acceptWebSocket(req, socket, (op, data) => {
    if (op === 8) socket.end(Buffer.from([0x88, 0]));
    else if (op === 1) sendFrame(socket, 1, Buffer.from("echo:" + data.toString() + " from " + bind));
  });
});
${GUEST_WEBSOCKET_SOURCE}
server.listen(port, bind, () => console.log("listening " + bind + ":" + port));
`;

async function rejection(p: Promise<unknown>, what: string): Promise<Error> {
  try {
    await p;
  } catch (err) {
    if (err instanceof Error) return err;
    throw err;
  }
  assert.fail(`${what}: expected a rejection, it resolved`);
}

/** One HTTP exchange, kept whole so a failing assertion shows what went over the wire. */
export interface Exchange {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The request and the response, for assertion messages. */
  text: string;
}

/** A plain HTTP/1.1 request to `origin` with exactly these headers (Host included). */
export function request(
  origin: string,
  o: { method?: string; path: string; headers: Record<string, string>; body?: Buffer },
): Promise<Exchange> {
  const url = new URL(origin);
  const method = o.method ?? "GET";
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method, path: o.path, headers: o.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString();
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            text:
              `> ${method} ${o.path} ${JSON.stringify(o.headers)}` +
              `${o.body ? ` (${o.body.length} bytes)` : ""}\n` +
              `< ${res.statusCode} ${JSON.stringify(res.headers)}\n< ${body.slice(0, 2000)}`,
          });
        });
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error(`${method} ${o.path}: no answer in 60 s`)));
    req.on("error", reject);
    req.end(o.body);
  });
}

function json(x: Exchange): Record<string, unknown> {
  try {
    return JSON.parse(x.body) as Record<string, unknown>;
  } catch (err) {
    assert.fail(`not a JSON body (${String(err)}):\n${x.text}`);
  }
}

/** A WebSocket handshake plus one text message and its echo, by hand so Host can be anything. */
export function wsEcho(
  origin: string,
  headers: Record<string, string>,
  message: string,
): Promise<{ reply: string; text: string }> {
  const url = new URL(origin);
  const key = randomBytes(16).toString("base64");
  const all = {
    ...headers,
    Connection: "Upgrade",
    Upgrade: "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": key,
  };
  const sent = `> GET /ws ${JSON.stringify(all)}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: "/ws", headers: all });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`WebSocket: no echo in 30 s\n${sent}`));
    }, 30_000);
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`WebSocket: ${err.message}\n${sent}`));
    });
    req.on("response", (res) => {
      let body = "";
      res.on("data", (c: Buffer) => {
        body += c.toString();
      });
      res.on("end", () => {
        clearTimeout(timer);
        reject(new Error(`WebSocket: no upgrade\n${sent}\n< ${res.statusCode} ${body}`));
      });
    });
    req.on("upgrade", (res, socket: Duplex, head: Buffer) => {
      const text = `${sent}\n< ${res.statusCode} ${JSON.stringify(res.headers)}`;
      const expected = createHash("sha1")
        .update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest("base64");
      if (res.headers["sec-websocket-accept"] !== expected) {
        clearTimeout(timer);
        socket.destroy();
        reject(new Error(`WebSocket: wrong Sec-WebSocket-Accept\n${text}`));
        return;
      }
      const payload = Buffer.from(message);
      const mask = randomBytes(4);
      const masked = Buffer.from(payload.map((b, i) => b ^ (mask[i % 4] ?? 0)));
      socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]));
      let buf = head;
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2) return;
        const len = (buf[1] ?? 0) & 127;
        if (buf.length < 2 + len) return;
        clearTimeout(timer);
        socket.off("data", onData);
        const reply = buf.subarray(2, 2 + len).toString();
        // A close frame, so the proxy sees an orderly end of the tunnel.
        socket.end(Buffer.concat([Buffer.from([0x88, 0x80]), randomBytes(4)]));
        resolve({ reply, text: `${text}\n< frame ${JSON.stringify(reply)}` });
      };
      socket.on("data", onData);
      socket.on("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`WebSocket: ${err.message}\n${text}`));
      });
      onData(Buffer.alloc(0));
    });
    req.end();
  });
}

function decode(chunks: Uint8Array[]): string {
  return Buffer.concat(chunks).toString();
}

export function e2bSdkCases(target: SuiteTarget, u: SdkUnderTest): void {
  const { Sandbox } = u.sdk;
  describe(u.name, { concurrency: false }, () => {
    const tag = `e2b-suite-${randomBytes(4).toString("hex")}`;
    let main: Sandbox;
    let other: Sandbox | undefined;
    const created: string[] = [];
    /** Background web servers in `main`, kept running through pause and resume. */
    const servers: CommandHandle[] = [];

    const api = (path: string, headers: Record<string, string>, method = "GET", body?: Buffer) =>
      request(target.apiUrl, { method, path, headers, body });
    const origin = () => new URL(target.apiUrl).host;
    const byHeader = (id: string, port: number) => ({
      Host: origin(),
      "E2b-Sandbox-Id": id,
      "E2b-Sandbox-Port": String(port),
    });
    const info = async (sbx: Sandbox): Promise<SandboxInfo> => sbx.getInfo();
    const pause = (sbx: Sandbox) => (u.hasPause ? sbx.pause() : sbx.betaPause());

    after(async () => {
      for (const id of created) {
        await Sandbox.kill(id).catch((err: unknown) => {
          console.error(`cleanup: kill ${id} failed: ${String(err)}`);
        });
      }
    });

    it("creates a sandbox with metadata and env vars that reach every process", async () => {
      main = await Sandbox.create({ metadata: { suite: tag, role: "main" }, envs: { FOO: "bar" } });
      created.push(main.sandboxId);
      assert.match(main.sandboxId, /^[a-z0-9]+$/, "sandbox ids are DNS-label safe without '-'");
      assert.equal((await main.commands.run("echo $FOO")).stdout, "bar\n");
      assert.equal((await main.commands.run("sh -c 'echo $FOO'")).stdout, "bar\n");
      // Per-command envs are for that command only.
      const once = await main.commands.run('echo "$BAZ"', { envs: { BAZ: "qux" } });
      assert.equal(once.stdout, "qux\n");
      assert.equal((await main.commands.run('echo "[$BAZ]"')).stdout, "[]\n");
    });

    it("getInfo: template, metadata, state and times", async () => {
      const before = Date.now();
      const i = await info(main);
      assert.equal(i.sandboxId, main.sandboxId);
      assert.deepEqual(i.metadata, { suite: tag, role: "main" });
      assert.equal(i.state, "running");
      assert.ok(i.templateId, "templateId is set");
      assert.ok(i.startedAt.getTime() <= before + 1000, `startedAt ${i.startedAt.toISOString()}`);
      // The SDK's default timeout is 300 s.
      const left = i.endAt.getTime() - before;
      assert.ok(left > 200_000 && left <= 301_000, `endAt is ${left} ms away, expected ~300 s`);
      assert.ok(i.cpuCount >= 1 && i.memoryMB > 0, JSON.stringify(i));
      assert.match(i.envdVersion, /^\d+\.\d+\.\d+/);
    });

    it("commands.run: exit code, stdout, stderr, cwd and user", async () => {
      const err = await rejection(
        main.commands.run("echo out; echo err >&2; exit 3"),
        "a command exiting with 3",
      );
      assert.ok(err instanceof u.sdk.CommandExitError, `got ${err.name}: ${err.message}`);
      assert.equal(err.exitCode, 3);
      assert.equal(err.stdout, "out\n");
      assert.equal(err.stderr, "err\n");
      const ok = await main.commands.run("echo fine");
      assert.equal(ok.exitCode, 0);
      assert.equal(ok.stderr, "");
      assert.equal((await main.commands.run("pwd")).stdout, `${HOME}\n`);
      assert.equal((await main.commands.run("pwd", { cwd: "/tmp" })).stdout, "/tmp\n");
      assert.equal((await main.commands.run("whoami")).stdout, "user\n");
      assert.equal((await main.commands.run("whoami", { user: "root" })).stdout, "root\n");
      const streamed: string[] = [];
      await main.commands.run("echo a; echo b", { onStdout: (d) => void streamed.push(d) });
      assert.equal(streamed.join(""), "a\nb\n");
    });

    it("background commands: stdin, list, kill", async () => {
      const out: string[] = [];
      const h = await main.commands.run('read line; echo "got $line"; exec sleep 600', {
        background: true,
        stdin: true,
        onStdout: (d) => void out.push(d),
      });
      assert.ok(h.pid > 0);
      const listed = await main.commands.list();
      const mine = listed.find((p) => p.pid === h.pid);
      assert.ok(mine, `pid ${h.pid} not in ${JSON.stringify(listed)}`);
      assert.ok(mine.args.join(" ").includes("read line"), JSON.stringify(mine));
      await main.commands.sendStdin(h.pid, "hello\n");
      await until("the echo of stdin", async () =>
        out.join("").includes("got hello") ? true : undefined,
      );
      assert.equal(await main.commands.kill(h.pid), true);
      const ended = await rejection(h.wait(), "a killed command");
      assert.ok(ended instanceof u.sdk.CommandExitError, `got ${ended.name}: ${ended.message}`);
      await until("the killed process to leave the list", async () =>
        (await main.commands.list()).some((p) => p.pid === h.pid) ? undefined : true,
      );
      assert.equal(await main.commands.kill(h.pid), false, "killing a gone pid → false");
    });

    it("background commands: connect re-attaches to a running process", async () => {
      const h = await main.commands.run(
        "sleep 1; for i in 1 2 3; do echo tick$i; sleep 0.5; done",
        { background: true },
      );
      await h.disconnect();
      const seen: string[] = [];
      const attached = await main.commands.connect(h.pid, { onStdout: (d) => void seen.push(d) });
      assert.equal(attached.pid, h.pid);
      const r = await attached.wait();
      assert.equal(r.exitCode, 0);
      assert.match(seen.join(""), /tick3\n/);
    });

    it("PTY: create, sendInput, resize, kill", async () => {
      const chunks: Uint8Array[] = [];
      const pty = await main.pty.create({
        cols: 80,
        rows: 24,
        onData: (d) => void chunks.push(d),
      });
      const type = (s: string) => main.pty.sendInput(pty.pid, new TextEncoder().encode(s));
      await type('stty size; echo "T=$TERM"\n');
      await until("stty size 24 80", async () =>
        /24 80\r?\n[\s\S]*T=xterm/.test(decode(chunks)) ? true : undefined,
      );
      await main.pty.resize(pty.pid, { cols: 100, rows: 30 });
      await type("stty size\n");
      await until("stty size 30 100", async () =>
        decode(chunks).includes("30 100") ? true : undefined,
      );
      assert.equal(await main.pty.kill(pty.pid), true);
      await Promise.race([
        pty.wait().then(
          () => undefined,
          () => undefined,
        ),
        sleep(15_000).then(() => assert.fail("the killed PTY's stream did not end in 15 s")),
      ]);
      assert.ok(!(await main.commands.list()).some((p) => p.pid === pty.pid));
    });

    it("files: write, writeFiles, read (text, bytes, blob, stream), list, exists, getInfo, makeDir, rename, remove", async () => {
      const f = main.files;
      const dir = `${HOME}/e2b-files`;
      const w = await f.write(`${dir}/a.txt`, "hello");
      assert.equal(w.name, "a.txt");
      assert.equal(w.path, `${dir}/a.txt`);
      const bytes = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 7) % 256);
      const entries = [
        { path: `${dir}/sub/b.bin`, data: bytes.buffer as ArrayBuffer },
        { path: "e2b-relative.txt", data: "relative to home" },
      ];
      const many = u.hasWriteFiles
        ? await f.writeFiles(entries)
        : ((await (f.write as (e: unknown) => Promise<unknown>)(entries)) as { path: string }[]);
      assert.deepEqual(
        many.map((x) => x.path),
        [`${dir}/sub/b.bin`, `${HOME}/e2b-relative.txt`],
      );
      assert.equal(await f.read(`${HOME}/e2b-relative.txt`), "relative to home");
      assert.equal(await f.read(`${dir}/a.txt`), "hello");
      assert.deepEqual(await f.read(`${dir}/sub/b.bin`, { format: "bytes" }), bytes);
      const blob = await f.read(`${dir}/sub/b.bin`, { format: "blob" });
      assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bytes);
      const stream = await f.read(`${dir}/sub/b.bin`, { format: "stream" });
      const parts: Uint8Array[] = [];
      for await (const c of stream) parts.push(c);
      assert.deepEqual(new Uint8Array(Buffer.concat(parts)), bytes);

      const top = await f.list(dir);
      assert.deepEqual(top.map((e) => [e.name, e.type]).sort(), [
        ["a.txt", "file"],
        ["sub", "dir"],
      ]);
      const deep = await f.list(dir, { depth: 2 });
      assert.deepEqual(deep.map((e) => e.path).sort(), [
        `${dir}/a.txt`,
        `${dir}/sub`,
        `${dir}/sub/b.bin`,
      ]);
      assert.equal(await f.exists(`${dir}/a.txt`), true);
      assert.equal(await f.exists(`${dir}/missing`), false);
      const st = await f.getInfo(`${dir}/sub/b.bin`);
      assert.equal(st.name, "b.bin");
      assert.equal(st.type, "file");
      assert.equal(st.size, bytes.length);
      assert.equal((await f.getInfo(dir)).type, "dir");
      assert.equal(await f.makeDir(`${dir}/made/deeper`), true);
      assert.equal(await f.makeDir(`${dir}/made/deeper`), false, "makeDir on an existing dir");
      assert.equal((await f.getInfo(`${dir}/made/deeper`)).type, "dir");
      const moved = await f.rename(`${dir}/a.txt`, `${dir}/renamed.txt`);
      assert.equal(moved.path, `${dir}/renamed.txt`);
      assert.equal(await f.exists(`${dir}/a.txt`), false);
      assert.equal(await f.read(`${dir}/renamed.txt`), "hello");
      await f.remove(`${dir}/renamed.txt`);
      await f.remove(`${dir}/sub`);
      assert.equal(await f.exists(`${dir}/renamed.txt`), false);
      assert.equal(await f.exists(`${dir}/sub/b.bin`), false);
      const missing = await rejection(f.read(`${dir}/nope.txt`), "reading a missing file");
      assert.ok(missing instanceof u.sdk.NotFoundError, `got ${missing.name}: ${missing.message}`);
    });

    it("watchDir reports files created in the directory", async () => {
      const dir = `${HOME}/e2b-watched`;
      await main.files.makeDir(dir);
      const events: FilesystemEvent[] = [];
      const w = await main.files.watchDir(dir, (e) => void events.push(e));
      try {
        await main.files.write(`${dir}/new.txt`, "x");
        await main.commands.run(`mkdir ${dir}/newdir`);
        const names = async () => {
          const seen = new Set(events.map((e) => `${e.name}:${e.type}`));
          return seen.has("new.txt:create") && seen.has("newdir:create") ? true : undefined;
        };
        await until(`create events, got ${JSON.stringify(events)}`, names, 15_000);
      } finally {
        await w.stop();
      }
    });

    it("uploadUrl and downloadUrl are signed and work without the SDK", async () => {
      const path = `${HOME}/e2b-signed.txt`;
      const up = await main.uploadUrl(path);
      assert.match(up, /[?&]signature=v1_/);
      const form = new FormData();
      form.append("file", new Blob(["signed upload"]), path);
      const posted = await fetch(up, { method: "POST", body: form });
      assert.equal(posted.status, 200, `POST ${up} → ${posted.status} ${await posted.text()}`);
      assert.equal(await main.files.read(path), "signed upload");

      const down = await main.downloadUrl(path);
      assert.match(down, /[?&]signature=v1_/);
      const got = await fetch(down);
      const body = await got.text();
      assert.equal(got.status, 200, `GET ${down} → ${got.status} ${body}`);
      assert.equal(body, "signed upload");

      const forged = new URL(down);
      forged.searchParams.set("signature", `v1_${"A".repeat(43)}`);
      const denied = await fetch(forged);
      const deniedBody = await denied.text();
      assert.equal(denied.status, 401, `GET ${forged} → ${denied.status} ${deniedBody}`);
    });

    it("list: metadata filter, state and pagination", async () => {
      other = await Sandbox.create({ metadata: { suite: tag, role: "other" } });
      created.push(other.sandboxId);
      const all = async (opts: Parameters<typeof Sandbox.list>[0]) => {
        const pages: SandboxInfo[][] = [];
        const p = Sandbox.list(opts);
        while (p.hasNext && pages.length < 10) pages.push(await p.nextItems());
        assert.ok(!p.hasNext, "the pages end");
        return pages;
      };
      const both = (await all({ query: { metadata: { suite: tag } } })).flat();
      assert.deepEqual(
        both.map((x) => x.sandboxId).sort(),
        [main.sandboxId, other.sandboxId].sort(),
      );
      const listedMain = both.find((x) => x.sandboxId === main.sandboxId);
      assert.deepEqual(listedMain?.metadata, { suite: tag, role: "main" });
      assert.equal(listedMain?.state, "running");

      const exact = (await all({ query: { metadata: { suite: tag, role: "other" } } })).flat();
      assert.deepEqual(
        exact.map((x) => x.sandboxId),
        [other.sandboxId],
      );
      assert.deepEqual((await all({ query: { metadata: { suite: `${tag}-none` } } })).flat(), []);
      const running = await all({ query: { metadata: { suite: tag }, state: ["running"] } });
      assert.equal(running.flat().length, 2);
      assert.deepEqual(
        (await all({ query: { metadata: { suite: tag }, state: ["paused"] } })).flat(),
        [],
      );

      const pages = await all({ query: { metadata: { suite: tag } }, limit: 1 });
      assert.ok(pages.length >= 2, `limit 1 gave ${pages.length} page(s)`);
      for (const page of pages) assert.ok(page.length <= 1, `a page of ${page.length}`);
      assert.deepEqual(
        pages
          .flat()
          .map((x) => x.sandboxId)
          .sort(),
        [main.sandboxId, other.sandboxId].sort(),
      );
    });

    it("setTimeout shortens the end time; the sandbox stops within seconds of it", async () => {
      const sbx = other;
      assert.ok(sbx, "the list case created it");
      assert.equal(await sbx.isRunning(), true);
      const t0 = Date.now();
      await sbx.setTimeout(3000);
      const endAt = (await info(sbx)).endAt.getTime();
      assert.ok(
        endAt >= t0 + 2000 && endAt <= Date.now() + 4000,
        `endAt ${endAt - t0} ms after setTimeout(3000)`,
      );
      await until(
        "isRunning() to turn false",
        async () => {
          const asked = Date.now();
          const running = await sbx.isRunning().catch((err: Error) => {
            throw new Error(
              `isRunning() at ${asked - t0} ms after setTimeout(3000) failed after ` +
                `${Date.now() - asked} ms: ${err.name}: ${err.message}`,
            );
          });
          return running ? undefined : true;
        },
        15_000,
        200,
      );
      const stoppedAfter = Date.now() - t0;
      assert.ok(
        stoppedAfter <= 3000 + 3000,
        `still running ${stoppedAfter} ms after setTimeout(3000)`,
      );
      // The host's reaper and the control plane's expiry job both act at the end time, so the
      // list may trail the proxy by a moment, never by more than the second expiry allows.
      let ids: string[] = [];
      await until(
        "the expired sandbox to leave the running list",
        async () => {
          const running = Sandbox.list({ query: { metadata: { suite: tag }, state: ["running"] } });
          ids = (await running.nextItems()).map((x) => x.sandboxId);
          return ids.includes(sbx.sandboxId) ? undefined : true;
        },
        1500,
        100,
      ).catch((err: Error) => {
        throw new Error(`${err.message}: still listed ${JSON.stringify(ids)}`);
      });
      assert.deepEqual(ids, [main.sandboxId]);
      // The default lifecycle kills on timeout.
      const gone = await rejection(Sandbox.connect(sbx.sandboxId), "connect after expiry");
      assert.equal(gone.name, u.notFoundName, gone.message);
    });

    it("connect extends the end time and never shortens it", async () => {
      const before = (await info(main)).endAt.getTime();
      const longer = await Sandbox.connect(main.sandboxId, { timeoutMs: 900_000 });
      assert.equal(longer.sandboxId, main.sandboxId);
      const extended = (await info(main)).endAt.getTime();
      assert.ok(extended > before, `endAt ${before} → ${extended}`);
      assert.ok(extended >= Date.now() + 850_000, `endAt only ${extended - Date.now()} ms away`);
      assert.equal((await longer.commands.run("echo $FOO")).stdout, "bar\n");
      if (u.connectNeverShrinks) {
        await Sandbox.connect(main.sandboxId, { timeoutMs: 60_000 });
        const after = (await info(main)).endAt.getTime();
        assert.ok(after >= extended, `connect(60 s) moved endAt from ${extended} to ${after}`);
      }
    });

    it("proxy: a web server on 0.0.0.0 and one on 127.0.0.1, by host name and by header, and a WebSocket", async (t) => {
      await main.files.write(SERVER_SCRIPT, serverSource);
      for (const [bind, port] of [
        ["0.0.0.0", 8080],
        ["127.0.0.1", 8081],
      ] as const) {
        const out: string[] = [];
        const h = await main.commands.run(`node ${SERVER_SCRIPT} ${bind} ${port}`, {
          background: true,
          onStdout: (d) => void out.push(d),
          onStderr: (d) => void out.push(d),
        });
        servers.push(h);
        await until(`the ${bind}:${port} server (output: ${out.join("")})`, async () =>
          out.join("").includes("listening") ? true : undefined,
        );
        // envd notices a new listener by polling (every second, as E2B's socat forwarder does),
        // so a loopback-only server is reachable within a few seconds of listening, not at once.
        const t0 = Date.now();
        let last: Exchange | undefined;
        await until(
          `${bind}:${port} through the proxy`,
          async () => {
            last = await api("/ready", byHeader(main.sandboxId, port));
            return last.status === 200 ? true : undefined;
          },
          5000,
        ).catch((err: Error) => {
          throw new Error(`${err.message}; the last answer:\n${last?.text}`);
        });
        t.diagnostic(
          `${bind}:${port} reachable through the proxy ${Date.now() - t0} ms after listening`,
        );
      }
      const id = main.sandboxId;
      for (const [bind, port] of [
        ["0.0.0.0", 8080],
        ["127.0.0.1", 8081],
      ] as const) {
        const host = main.getHost(port);
        assert.equal(host.split(".")[0], `${port}-${id}`);
        // getHost names {port}-{id}.{domain}; without wildcard DNS the request goes to the
        // control plane's address with that Host header, as a DNS entry would send it.
        const viaHost = await api("/hello?x=1", { Host: host });
        assert.equal(viaHost.status, 200, viaHost.text);
        const seen = json(viaHost);
        assert.deepEqual(
          { bind: seen.bind, port: seen.port, method: seen.method, url: seen.url },
          { bind, port, method: "GET", url: "/hello?x=1" },
          viaHost.text,
        );
        const viaHeader = await api("/by-header", byHeader(id, port));
        assert.equal(viaHeader.status, 200, viaHeader.text);
        assert.equal(json(viaHeader).url, "/by-header", viaHeader.text);
        assert.equal(json(viaHeader).bind, bind, viaHeader.text);

        const ws = await wsEcho(target.apiUrl, { Host: host }, `hi ${port}`);
        assert.equal(ws.reply, `echo:hi ${port} from ${bind}`, ws.text);
        const wsHeader = await wsEcho(target.apiUrl, byHeader(id, port), "by header");
        assert.equal(wsHeader.reply, `echo:by header from ${bind}`, wsHeader.text);
      }
      // A streamed request body reaches the guest whole.
      const big = randomBytes(2 << 20);
      const posted = await api("/upload", byHeader(id, 8080), "POST", big);
      assert.equal(posted.status, 200, posted.text);
      assert.equal(json(posted).bodyLength, big.length, posted.text);
      assert.equal(
        json(posted).bodySha256,
        createHash("sha256").update(big).digest("hex"),
        posted.text,
      );

      const closed = await api("/", byHeader(id, 8099));
      assert.equal(closed.status, 502, closed.text);
      assert.deepEqual(
        json(closed),
        {
          message: "The sandbox is running but port is not open",
          sandboxId: id,
          port: 8099,
          code: 502,
        },
        closed.text,
      );
      const unknownId = `zz${randomBytes(9).toString("hex")}`;
      const unknown = await api("/", byHeader(unknownId, 8080));
      assert.equal(unknown.status, 502, unknown.text);
      assert.deepEqual(
        json(unknown),
        { sandboxId: unknownId, message: "The sandbox was not found", code: 502 },
        unknown.text,
      );
    });

    it("pause: isRunning() false, then connect resumes it with its files and background processes", async () => {
      await main.files.write(`${HOME}/e2b-persist.txt`, "kept across pause");
      const sleeper = await main.commands.run("exec sleep 3600", { background: true });
      await sleeper.disconnect();
      assert.equal(await pause(main), true);
      assert.equal(await main.isRunning(), false);
      assert.equal((await info(main)).state, "paused");
      assert.equal(await pause(main), false, "pausing a paused sandbox → false (409)");
      const listed = Sandbox.list({ query: { metadata: { suite: tag }, state: ["paused"] } });
      assert.deepEqual(
        (await listed.nextItems()).map((x) => x.sandboxId),
        [main.sandboxId],
      );
      const proxied = await api("/after-pause", byHeader(main.sandboxId, 8080));
      assert.equal(proxied.status, 502, proxied.text);
      assert.equal(json(proxied).message, "The sandbox was not found", proxied.text);

      const resumed = await Sandbox.connect(main.sandboxId);
      assert.equal(await resumed.isRunning(), true);
      assert.equal(await main.isRunning(), true);
      assert.equal((await info(main)).state, "running");
      assert.equal(await resumed.files.read(`${HOME}/e2b-persist.txt`), "kept across pause");
      const pids = (await resumed.commands.list()).map((p) => p.pid);
      assert.ok(pids.includes(sleeper.pid), `pid ${sleeper.pid} not in ${JSON.stringify(pids)}`);
      for (const s of servers) assert.ok(pids.includes(s.pid), `server pid ${s.pid} gone`);
      const again = await api("/after-resume", { Host: resumed.getHost(8080) });
      assert.equal(again.status, 200, again.text);
      assert.equal(json(again).url, "/after-resume", again.text);
      assert.equal((await resumed.commands.run("echo $FOO")).stdout, "bar\n");
      main = resumed;
    });

    it("kill: connect then throws not found, a second kill returns false", async () => {
      const id = main.sandboxId;
      await main.kill();
      assert.equal(await main.isRunning(), false);
      const err = await rejection(Sandbox.connect(id), "connect to a killed sandbox");
      assert.equal(err.name, u.notFoundName, err.message);
      assert.ok(err instanceof u.sdk.NotFoundError);
      assert.equal(await Sandbox.kill(id), false);
      const running = Sandbox.list({ query: { metadata: { suite: tag }, state: ["running"] } });
      assert.deepEqual(await running.nextItems(), []);
      const proxied = await api("/", byHeader(id, 8080));
      assert.equal(proxied.status, 502, proxied.text);
      assert.deepEqual(
        json(proxied),
        { sandboxId: id, message: "The sandbox was not found", code: 502 },
        proxied.text,
      );
    });

    it("a sandbox created right after another was killed answers its first command", async () => {
      // Create, use and kill in a loop, as scripts do: a new sandbox often gets the slot (and
      // guest address) of the one just killed, and must not inherit connections to it.
      for (let i = 0; i < 3; i++) {
        const sbx = await Sandbox.create({ metadata: { suite: tag, role: `loop-${i}` } });
        created.push(sbx.sandboxId);
        const first = await sbx.commands.run("echo first").then(
          (r) => r.stdout,
          (err: Error) => `${err.name}: ${err.message}`,
        );
        assert.equal(first, "first\n", `round ${i}, sandbox ${sbx.sandboxId}, first command`);
        await sbx.kill();
      }
    });
  });
}
