/**
 * Command and file routes of the control plane against a real stack (stack-fixture.ts): REST
 * exec and background processes, the exec / process / PTY WebSockets, streamed uploads and
 * downloads, and the filesystem operations.
 *
 * One file (~650 lines) because all cases share one sandbox on one stack: starting it is most of
 * the run time, and another file would start another.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import WebSocket from "ws";
import { type CommandStack, startCommandStack } from "./support/stack-fixture.js";

// biome-ignore lint/suspicious/noExplicitAny: frames are checked field by field
type Frame = any;

interface WsClient {
  ws: WebSocket;
  frames: Frame[];
  send(frame: unknown): void;
  /** The first frame (from `from` on) matching `pred`. */
  waitFor(pred: (f: Frame) => boolean, timeoutMs?: number): Promise<Frame>;
  closed: Promise<number>;
}

function openWs(stack: CommandStack, route: string, headers = true): Promise<WsClient> {
  const ws = new WebSocket(`${stack.apiUrl.replace(/^http/, "ws")}${route}`, {
    headers: headers ? { "X-API-Key": stack.apiKey } : {},
  });
  const frames: Frame[] = [];
  const waiters = new Set<() => void>();
  ws.on("message", (d) => {
    frames.push(JSON.parse(d.toString()));
    for (const w of waiters) w();
  });
  const closed = new Promise<number>((resolve) => ws.on("close", (code) => resolve(code)));
  const client: WsClient = {
    ws,
    frames,
    send: (f) => ws.send(JSON.stringify(f)),
    waitFor(pred, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const f = frames.find(pred);
          if (f !== undefined) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(f);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(
            new Error(
              `no matching frame in ${timeoutMs} ms; got ${JSON.stringify(frames).slice(0, 2000)}`,
            ),
          );
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    closed,
  };
  return new Promise((resolve, reject) => {
    ws.once("open", () => resolve(client));
    ws.once("unexpected-response", (_req, res) =>
      reject(new Error(`upgrade refused: ${res.statusCode}`)),
    );
    ws.once("error", reject);
  });
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");
const text = (frames: Frame[], type: string) =>
  Buffer.concat(
    frames.filter((f) => f.type === type).map((f) => Buffer.from(f.data, "base64")),
  ).toString();

describe("command and file routes (real agent, namespace runtime)", { timeout: 600_000 }, () => {
  let stack: CommandStack;
  let sb: string;
  const exec = (body: unknown) => stack.api("POST", `/v1/sandboxes/${sb}/exec`, body);
  const sh = async (script: string) => {
    const r = await exec({ cmd: "/bin/sh", args: ["-c", script] });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };

  before(async () => {
    stack = await startCommandStack();
    sb = stack.sandboxId;
  });
  after(async () => {
    await stack?.close();
  });

  describe("exec", () => {
    it("returns stdout, stderr and the exit code", async () => {
      const r = await exec({ cmd: "/bin/sh", args: ["-c", "echo out; echo err >&2; exit 3"] });
      assert.equal(r.status, 200);
      assert.equal(r.body.stdout, "out\n");
      assert.equal(r.body.stderr, "err\n");
      assert.equal(r.body.exit_code, 3);
      assert.equal(r.body.encoding, "utf-8");
      assert.equal(r.body.timed_out, false);
      assert.ok(Number.isInteger(r.body.duration_ms));
    });

    it("runs without a shell, with envs, cwd and user", async () => {
      const r = await exec({ cmd: "echo", args: ["$HOME", "a b"] });
      assert.equal(r.body.stdout, "$HOME a b\n");
      const e = await exec({
        cmd: "/bin/sh",
        args: ["-c", 'echo "$FOO"; pwd; id -un'],
        envs: { FOO: "bar" },
        cwd: "/tmp",
        user: "root",
      });
      assert.equal(e.status, 200, JSON.stringify(e.body));
      assert.equal(e.body.stdout, "bar\n/tmp\nroot\n");
    });

    it("returns both streams base64 when one is not UTF-8", async () => {
      const r = await exec({ cmd: "/bin/sh", args: ["-c", "printf '\\377\\376'; echo fine >&2"] });
      assert.equal(r.body.encoding, "base64");
      assert.deepEqual(Buffer.from(r.body.stdout, "base64"), Buffer.from([0xff, 0xfe]));
      assert.equal(Buffer.from(r.body.stderr, "base64").toString(), "fine\n");
    });

    it("kills a command at its timeout and returns the output so far", async () => {
      const t0 = Date.now();
      const r = await exec({
        cmd: "/bin/sh",
        args: ["-c", "echo started; exec sleep 60"],
        timeout_sec: 1,
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.ok(Date.now() - t0 < 15_000);
      assert.equal(r.body.timed_out, true);
      assert.equal(r.body.exit_code, -1);
      assert.equal(r.body.stdout, "started\n");
      const ps = await sh("pgrep -x sleep || true");
      assert.equal(ps.stdout, "", "the timed-out command is gone");
    });

    it("rejects bad input with 400 naming the field, and unknown sandboxes with 404", async () => {
      const missing = await exec({ args: ["x"] });
      assert.equal(missing.status, 400);
      assert.equal(missing.body.error.field, "cmd");
      const range = await exec({ cmd: "ls", timeout_sec: 0 });
      assert.equal(range.status, 400);
      assert.equal(range.body.error.field, "timeout_sec");
      const cwd = await exec({ cmd: "ls", cwd: "relative" });
      assert.equal(cwd.status, 400);
      const malformed = await stack.api("POST", `/v1/sandboxes/${sb}/exec`, "{not json");
      assert.equal(malformed.status, 400);
      const other = await stack.api("POST", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/exec", {
        cmd: "ls",
      });
      assert.equal(other.status, 404);
      const noKey = await stack.api(
        "POST",
        `/v1/sandboxes/${sb}/exec`,
        { cmd: "ls" },
        `nbx_${"0".repeat(40)}`,
      );
      assert.equal(noKey.status, 401);
    });
  });

  describe("background processes", () => {
    it("starts, lists, feeds stdin, and signals by tag and pid", async () => {
      const started = await stack.api("POST", `/v1/sandboxes/${sb}/processes`, {
        cmd: "/bin/sh",
        args: ["-c", 'read line; echo "$line" > /tmp/stdin-got; exec sleep 600'],
        tag: "reader",
      });
      assert.equal(started.status, 201, JSON.stringify(started.body));
      assert.equal(started.body.tag, "reader");
      const pid = started.body.pid;
      assert.ok(pid > 0);

      const dup = await stack.api("POST", `/v1/sandboxes/${sb}/processes`, {
        cmd: "sleep",
        args: ["1"],
        tag: "reader",
      });
      assert.equal(dup.status, 409);

      const list = await stack.api("GET", `/v1/sandboxes/${sb}/processes`);
      assert.equal(list.status, 200);
      const mine = list.body.processes.find((p: Frame) => p.pid === pid);
      assert.equal(mine?.tag, "reader");
      assert.equal(mine?.cmd, "/bin/sh");

      const fed = await stack.api("POST", `/v1/sandboxes/${sb}/processes/reader/stdin`, {
        data: b64("hello\n"),
      });
      assert.equal(fed.status, 204, JSON.stringify(fed.body));
      let got = "";
      for (let i = 0; i < 50 && got !== "hello\n"; i++) {
        got = (await sh("cat /tmp/stdin-got 2>/dev/null || true")).stdout;
        if (got !== "hello\n") await sleep(100);
      }
      assert.equal(got, "hello\n");

      const term = await stack.api("POST", `/v1/sandboxes/${sb}/processes/${pid}/signal`, {
        signal: "SIGTERM",
      });
      assert.equal(term.status, 204);
      let gone = false;
      for (let i = 0; i < 50 && !gone; i++) {
        const l = await stack.api("GET", `/v1/sandboxes/${sb}/processes`);
        gone = !l.body.processes.some((p: Frame) => p.pid === pid);
        if (!gone) await sleep(100);
      }
      assert.ok(gone, "the process is gone after SIGTERM");

      const tagged = await stack.api("POST", `/v1/sandboxes/${sb}/processes`, {
        cmd: "sleep",
        args: ["600"],
      });
      assert.match(tagged.body.tag, /^proc-[0-9a-f]{8}$/);
      const kill = await stack.api(
        "POST",
        `/v1/sandboxes/${sb}/processes/${tagged.body.tag}/signal`,
        { signal: "SIGKILL" },
      );
      assert.equal(kill.status, 204);
    });

    it("closes stdin on request", async () => {
      const p = await stack.api("POST", `/v1/sandboxes/${sb}/processes`, {
        cmd: "/bin/sh",
        args: ["-c", "cat > /tmp/cat-out; echo done >> /tmp/cat-out"],
      });
      assert.equal(p.status, 201);
      const r = await stack.api("POST", `/v1/sandboxes/${sb}/processes/${p.body.pid}/stdin`, {
        data: b64("abc"),
        close: true,
      });
      assert.equal(r.status, 204);
      let out = "";
      for (let i = 0; i < 50 && out !== "abcdone\n"; i++) {
        out = (await sh("cat /tmp/cat-out 2>/dev/null || true")).stdout;
        if (out !== "abcdone\n") await sleep(100);
      }
      assert.equal(out, "abcdone\n");
    });

    it("answers 404 for unknown processes and 400 for bad signals or data", async () => {
      assert.equal(
        (
          await stack.api("POST", `/v1/sandboxes/${sb}/processes/999999/signal`, {
            signal: "SIGKILL",
          })
        ).status,
        404,
      );
      assert.equal(
        (
          await stack.api("POST", `/v1/sandboxes/${sb}/processes/nope/signal`, {
            signal: "SIGKILL",
          })
        ).status,
        404,
      );
      assert.equal(
        (await stack.api("POST", `/v1/sandboxes/${sb}/processes/nope/stdin`, { data: b64("x") }))
          .status,
        404,
      );
      const sig = await stack.api("POST", `/v1/sandboxes/${sb}/processes/1/signal`, {
        signal: "SIGHUP",
      });
      assert.equal(sig.status, 400);
      assert.equal(sig.body.error.field, "signal");
      const data = await stack.api("POST", `/v1/sandboxes/${sb}/processes/nope/stdin`, {
        data: "not base64!",
      });
      assert.equal(data.status, 400);
      const tag = await stack.api("POST", `/v1/sandboxes/${sb}/processes`, {
        cmd: "ls",
        tag: "123",
      });
      assert.equal(tag.status, 400);
    });
  });

  describe("WebSocket exec stream", () => {
    it("streams start, stdout, stderr and exit, and takes stdin", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`);
      c.send({
        type: "start",
        cmd: "/bin/sh",
        args: ["-c", 'read x; echo "got $x"; echo e >&2; exit 7'],
      });
      const start = await c.waitFor((f) => f.type === "start");
      assert.ok(start.pid > 0);
      c.send({ type: "stdin", data: b64("hi\n") });
      const exit = await c.waitFor((f) => f.type === "exit");
      assert.equal(exit.exit_code, 7);
      assert.equal(text(c.frames, "stdout"), "got hi\n");
      assert.equal(text(c.frames, "stderr"), "e\n");
      assert.equal(await c.closed, 1000);
    });

    it("answers bad frames with error frames and keeps going", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`);
      c.ws.send("{oops");
      await c.waitFor((f) => f.type === "error" && f.code === "invalid_message");
      c.send({ type: "dance" });
      c.send({ type: "start" });
      await c.waitFor((f) => f.type === "error" && /cmd/.test(f.message));
      c.send({ type: "start", cmd: "echo", args: ["ok"] });
      await c.waitFor((f) => f.type === "exit");
      assert.equal(text(c.frames, "stdout"), "ok\n");
      assert.equal(c.frames.filter((f) => f.type === "error").length, 3);
    });

    it("kills the command on {type: kill}", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`);
      c.send({ type: "start", cmd: "sleep", args: ["300"] });
      const { pid } = await c.waitFor((f) => f.type === "start");
      c.send({ type: "kill" });
      const exit = await c.waitFor((f) => f.type === "exit");
      assert.notEqual(exit.exit_code, 0);
      const ps = await sh(`kill -0 ${pid} 2>/dev/null && echo alive || echo dead`);
      assert.equal(ps.stdout, "dead\n");
    });

    it("kills the command when the client closes the socket first", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`);
      c.send({ type: "start", cmd: "/bin/sh", args: ["-c", "exec sleep 301"] });
      const { pid } = await c.waitFor((f) => f.type === "start");
      c.ws.close();
      let state = "alive\n";
      for (let i = 0; i < 50 && state === "alive\n"; i++) {
        state = (await sh(`kill -0 ${pid} 2>/dev/null && echo alive || echo dead`)).stdout;
        if (state === "alive\n") await sleep(100);
      }
      assert.equal(state, "dead\n");
    });

    it("stops reading the command's output while the client does not read (backpressure)", async (t) => {
      const SIZE = 96 << 20;
      const c = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`);
      c.send({ type: "start", cmd: "head", args: ["-c", String(SIZE), "/dev/zero"] });
      await c.waitFor((f) => f.type === "start");
      c.ws.pause();
      const before = stack.serverRss();
      let peak = before;
      for (let i = 0; i < 30; i++) {
        await sleep(100);
        peak = Math.max(peak, stack.serverRss());
      }
      const growth = peak - before;
      t.diagnostic(
        `control plane RSS while the client stalls: +${(growth / 2 ** 20).toFixed(1)} MiB`,
      );
      // Without backpressure the control plane would hold the whole output (128 MiB as base64).
      assert.ok(
        growth < 48 << 20,
        `control plane RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB`,
      );
      c.ws.resume();
      const exit = await c.waitFor((f) => f.type === "exit", 60_000);
      assert.equal(exit.exit_code, 0);
      const got = c.frames
        .filter((f) => f.type === "stdout")
        .reduce((n, f) => n + Buffer.from(f.data, "base64").length, 0);
      assert.equal(got, SIZE);
    });

    it("authenticates browsers with a first auth frame, and refuses bad credentials", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`, false);
      c.send({ type: "auth", token: "not-a-jwt" });
      const err = await c.waitFor((f) => f.type === "error");
      assert.equal(err.code, "unauthorized");
      assert.equal(await c.closed, 1008);

      const silent = await openWs(stack, `/v1/sandboxes/${sb}/exec/stream`, false);
      assert.equal(await silent.closed, 1008, "no auth frame within 5 s closes the socket");

      await assert.rejects(
        () => openWs(stack, "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa/exec/stream"),
        /upgrade refused: 404/,
      );
      await assert.rejects(
        () => openWs(stack, `/v1/sandboxes/${sb}/nothing-here`),
        /upgrade refused: 404/,
      );
      const bad = new WebSocket(`${stack.apiUrl.replace(/^http/, "ws")}/v1/sandboxes/${sb}/pty`, {
        headers: { "X-API-Key": `nbx_${"1".repeat(40)}` },
      });
      const status = await new Promise<number>((resolve) => {
        bad.once("unexpected-response", (_q, res) => resolve(res.statusCode ?? 0));
        bad.once("error", () => resolve(-1));
      });
      assert.equal(status, 401);
    });

    it("attaches to a background process's output", async () => {
      const p = await stack.api("POST", `/v1/sandboxes/${sb}/processes`, {
        cmd: "/bin/sh",
        args: ["-c", 'while read l; do echo "echo:$l"; done'],
        tag: "echoer",
      });
      assert.equal(p.status, 201);
      const c = await openWs(stack, `/v1/sandboxes/${sb}/processes/echoer/stream`);
      await c.waitFor((f) => f.type === "start");
      await stack.api("POST", `/v1/sandboxes/${sb}/processes/echoer/stdin`, { data: b64("one\n") });
      await c.waitFor(() => text(c.frames, "stdout") === "echo:one\n");
      c.send({ type: "stdin", data: b64("two\n"), eof: true });
      const exit = await c.waitFor((f) => f.type === "exit");
      assert.equal(exit.exit_code, 0);
      assert.equal(text(c.frames, "stdout"), "echo:one\necho:two\n");
      const none = await openWs(stack, `/v1/sandboxes/${sb}/processes/nope/stream`);
      assert.equal((await none.waitFor((f) => f.type === "error")).code, "not_found");
    });
  });

  describe("WebSocket PTY", () => {
    it("starts a terminal, takes input and resizes, and reconnects by tag", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/pty`);
      c.send({
        type: "start",
        cmd: "/bin/bash",
        args: ["--norc", "--noprofile", "-i"],
        cols: 80,
        rows: 24,
        tag: "term1",
      });
      const started = await c.waitFor((f) => f.type === "started");
      assert.equal(started.tag, "term1");
      assert.ok(started.pid > 0);
      c.send({ type: "resize", cols: 123, rows: 45 });
      c.send({ type: "input", data: b64("stty size; echo mark-$((6*7))\n") });
      await c.waitFor(
        () => /45 123/.test(text(c.frames, "output")) && /mark-42/.test(text(c.frames, "output")),
      );

      // Leaving does not end the terminal; a new socket finds it by tag.
      c.ws.close();
      await c.closed;
      const again = await openWs(stack, `/v1/sandboxes/${sb}/pty`);
      again.send({ type: "connect", tag: "term1" });
      const re = await again.waitFor((f) => f.type === "started");
      assert.deepEqual([re.pid, re.tag], [started.pid, "term1"]);
      again.send({ type: "input", data: b64("echo back-$((2+3))\n") });
      await again.waitFor(() => /back-5/.test(text(again.frames, "output")));
      again.send({ type: "input", data: b64("exit 4\n") });
      const exit = await again.waitFor((f) => f.type === "exit");
      assert.equal(exit.exit_code, 4);
      assert.equal(await again.closed, 1000);

      const gone = await openWs(stack, `/v1/sandboxes/${sb}/pty`);
      gone.send({ type: "connect", tag: "term1" });
      const err = await gone.waitFor((f) => f.type === "error");
      assert.equal(err.code, "not_found");
    });

    it("kills a terminal on {type: kill} and validates frames", async () => {
      const c = await openWs(stack, `/v1/sandboxes/${sb}/pty`);
      c.send({ type: "start", cols: 0, rows: 24 });
      await c.waitFor((f) => f.type === "error" && /cols/.test(f.message));
      c.send({ type: "start", cols: 80, rows: 24 });
      const started = await c.waitFor((f) => f.type === "started");
      assert.match(started.tag, /^pty-[0-9a-f]{8}$/);
      c.send({ type: "input", data: "%%%" });
      await c.waitFor((f) => f.type === "error" && /base64/.test(f.message));
      c.send({ type: "kill" });
      const exit = await c.waitFor((f) => f.type === "exit");
      assert.notEqual(exit.exit_code, 0);
    });
  });

  describe("files", () => {
    const files = (q: string) => `/v1/sandboxes/${sb}/files${q}`;

    it("round-trips 200 MiB through PUT and GET with the control plane's memory bounded", async (t) => {
      const SIZE = 200 << 20;
      const block = Buffer.alloc(1 << 20);
      const upHash = createHash("sha256");
      let sent = 0;
      let seed = 1;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= SIZE) {
            controller.close();
            return;
          }
          // Varying content, so a transfer that reorders or repeats blocks fails the checksum.
          for (let i = 0; i < block.length; i += 4) {
            seed = (seed * 1103515245 + 12345) >>> 0;
            block.writeUInt32LE(seed, i);
          }
          const chunk = Buffer.from(block);
          upHash.update(chunk);
          sent += chunk.length;
          controller.enqueue(chunk);
        },
      });
      const base = stack.serverRss();
      let peak = base;
      const sampler = setInterval(() => {
        peak = Math.max(peak, stack.serverRss());
      }, 50);
      try {
        const up = await fetch(`${stack.apiUrl}${files("?path=/tmp/big.bin")}`, {
          method: "PUT",
          headers: { "X-API-Key": stack.apiKey, "Content-Type": "application/octet-stream" },
          body,
          duplex: "half",
        } as RequestInit);
        const entry: Frame = await up.json();
        assert.equal(up.status, 200, JSON.stringify(entry));
        assert.equal(entry.size, SIZE);
        assert.equal(entry.type, "file");

        const inSandbox = await sh("sha256sum /tmp/big.bin | cut -d' ' -f1");
        const want = upHash.digest("hex");
        assert.equal(inSandbox.stdout.trim(), want);

        const down = await fetch(`${stack.apiUrl}${files("?path=/tmp/big.bin")}`, {
          headers: { "X-API-Key": stack.apiKey },
        });
        assert.equal(down.status, 200);
        assert.equal(down.headers.get("content-type"), "application/octet-stream");
        const downHash = createHash("sha256");
        let got = 0;
        for await (const chunk of down.body as unknown as AsyncIterable<Uint8Array>) {
          downHash.update(chunk);
          got += chunk.length;
        }
        assert.equal(got, SIZE);
        assert.equal(downHash.digest("hex"), want);
      } finally {
        clearInterval(sampler);
      }
      const growth = peak - base;
      t.diagnostic(
        `control plane RSS: ${(base / 2 ** 20).toFixed(1)} MiB before, peak +${(growth / 2 ** 20).toFixed(1)} MiB`,
      );
      assert.ok(
        growth < 100 << 20,
        `control plane RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB`,
      );
      await sh("rm -f /tmp/big.bin");
    });

    it("uploads multipart/form-data (the first file part)", async () => {
      const form = new FormData();
      form.set("note", "ignored");
      form.set("file", new Blob([Buffer.from("multi\npart\n")]), "x.txt");
      const r = await fetch(`${stack.apiUrl}${files("?path=/tmp/up/dir/form.txt")}`, {
        method: "POST",
        headers: { "X-API-Key": stack.apiKey },
        body: form,
      });
      const entry: Frame = await r.json();
      assert.equal(r.status, 200, JSON.stringify(entry));
      assert.equal(entry.size, 11);
      assert.equal((await sh("cat /tmp/up/dir/form.txt")).stdout, "multi\npart\n");

      const noFile = new FormData();
      noFile.set("note", "no file here");
      const bad = await fetch(`${stack.apiUrl}${files("?path=/tmp/x")}`, {
        method: "POST",
        headers: { "X-API-Key": stack.apiKey },
        body: noFile,
      });
      assert.equal(bad.status, 400);
      const raw = await fetch(`${stack.apiUrl}${files("?path=/tmp/x")}`, {
        method: "POST",
        headers: { "X-API-Key": stack.apiKey, "Content-Type": "text/plain" },
        body: "x",
      });
      assert.equal(raw.status, 400);
    });

    it("lists, stats, makes directories, moves and removes", async () => {
      await sh(
        "rm -rf /tmp/fs && mkdir -p /tmp/fs/a/b && echo hi > /tmp/fs/a/b/f.txt && ln -s /tmp/fs/a/b/f.txt /tmp/fs/link",
      );
      const one = await stack.api("GET", files("/list?path=/tmp/fs"));
      assert.equal(one.status, 200);
      assert.deepEqual(one.body.entries.map((e: Frame) => e.name).sort(), ["a", "link"]);
      const deep = await stack.api("GET", files("/list?path=/tmp/fs&depth=3"));
      assert.ok(deep.body.entries.some((e: Frame) => e.path === "/tmp/fs/a/b/f.txt"));

      const st = await stack.api("GET", files("/stat?path=/tmp/fs/a/b/f.txt"));
      assert.equal(st.status, 200);
      assert.equal(st.body.type, "file");
      assert.equal(st.body.size, 3);
      assert.match(st.body.permissions, /^-r/);
      assert.ok(!Number.isNaN(Date.parse(st.body.modified_at)));
      const link = await stack.api("GET", files("/stat?path=/tmp/fs/link"));
      assert.equal(link.body.symlink_target, "/tmp/fs/a/b/f.txt");

      const mk = await stack.api("POST", files("/mkdir"), { path: "/tmp/fs/new/deeper" });
      assert.equal(mk.status, 201, JSON.stringify(mk.body));
      assert.equal(mk.body.type, "dir");
      assert.equal(
        (await stack.api("POST", files("/mkdir"), { path: "/tmp/fs/new/deeper" })).status,
        409,
      );

      const mv = await stack.api("POST", files("/move"), {
        source: "/tmp/fs/a/b/f.txt",
        destination: "/tmp/fs/new/g.txt",
      });
      assert.equal(mv.status, 200, JSON.stringify(mv.body));
      assert.equal(mv.body.path, "/tmp/fs/new/g.txt");
      assert.equal((await stack.api("GET", files("/stat?path=/tmp/fs/a/b/f.txt"))).status, 404);

      assert.equal((await stack.api("DELETE", files("?path=/tmp/fs/new"))).status, 204);
      assert.equal((await stack.api("GET", files("/stat?path=/tmp/fs/new"))).status, 404);
      assert.equal((await stack.api("GET", files("?path=/tmp/fs/missing"))).status, 404);
    });

    it("maps permission errors to 403 and rejects relative paths and bad depths", async () => {
      const root = await exec({
        cmd: "/bin/sh",
        args: ["-c", "mkdir -p /tmp/locked && chmod 700 /tmp/locked"],
        user: "root",
      });
      assert.equal(root.body.exit_code, 0);
      // The agent's file operations run as the sandbox's default user, not root.
      const denied = await stack.api("GET", files("/list?path=/tmp/locked"));
      assert.equal(denied.status, 403, JSON.stringify(denied.body));
      for (const q of [
        "/list?path=tmp",
        "/stat?path=relative/x",
        "?path=x",
        "/list?path=/tmp&depth=11",
        "/stat",
      ]) {
        const r = await stack.api("GET", files(q));
        assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
      }
      const put = await fetch(`${stack.apiUrl}${files("?path=rel.txt")}`, {
        method: "PUT",
        headers: { "X-API-Key": stack.apiKey },
        body: "x",
      });
      assert.equal(put.status, 400);
      assert.equal((await stack.api("POST", files("/mkdir"), {})).status, 400);
      assert.equal((await stack.api("POST", files("/move"), { source: "/tmp/a" })).status, 400);
    });

    it("documents the routes in OpenAPI", async () => {
      const doc: Frame = await (await fetch(`${stack.apiUrl}/openapi.json`)).json();
      for (const p of [
        "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/processes",
        "/v1/sandboxes/{id}/processes/{selector}/signal",
        "/v1/sandboxes/{id}/files",
        "/v1/sandboxes/{id}/files/list",
      ])
        assert.ok(doc.paths[p], `${p} is documented`);
      assert.ok(doc.paths["/v1/sandboxes/{id}/files"].put, "raw upload is documented");
    });
  });
});
