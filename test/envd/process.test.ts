import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { StreamInputRequestSchema } from "@nestbox/proto/process";
import { CommandExitError, NotFoundError, type Sandbox, TimeoutError } from "e2b";
import { type EnvdProcess, sdkSandbox, startEnvd } from "./support/harness.js";
import { processClient, rawStream } from "./support/rpc-client.js";

/** Running, not merely an unreaped zombie (orphans may wait for a slow reaper). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(50);
  }
  assert.fail("condition not met in time");
}

describe("process service through the e2b SDK", () => {
  let envd: EnvdProcess;
  let sbx: Sandbox;
  before(async () => {
    envd = await startEnvd();
    sbx = sdkSandbox(envd);
  });
  after(() => envd.stop());

  it("runs a command and returns stdout, stderr and exit code 0", async () => {
    const r = await sbx.commands.run("echo out; echo err >&2");
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
  });

  it("rejects with CommandExitError carrying the exit code and output", async () => {
    await assert.rejects(sbx.commands.run("echo partial; exit 7"), (err: unknown) => {
      assert.ok(err instanceof CommandExitError);
      assert.equal(err.exitCode, 7);
      assert.equal(err.stdout, "partial\n");
      assert.equal(err.error, "exit status 7");
      return true;
    });
  });

  it("runs as the default user `user` with HOME and cwd /home/user", async () => {
    const r = await sbx.commands.run('id -un; echo "$HOME"; pwd');
    assert.equal(r.stdout, "user\n/home/user\n/home/user\n");
  });

  it("runs as root when asked, with root's home", async () => {
    const r = await sbx.commands.run('id -un; echo "$HOME"', { user: "root" });
    assert.equal(r.stdout, "root\n/root\n");
  });

  it("passes per-command envs without leaking them into later commands", async () => {
    const r1 = await sbx.commands.run('echo "$FOO"', { envs: { FOO: "bar" } });
    assert.equal(r1.stdout, "bar\n");
    const r2 = await sbx.commands.run('echo "[$FOO]"');
    assert.equal(r2.stdout, "[]\n");
  });

  it("honours cwd, and rejects a missing cwd", async () => {
    const r = await sbx.commands.run("pwd", { cwd: "/tmp" });
    assert.equal(r.stdout, "/tmp\n");
    await assert.rejects(sbx.commands.run("pwd", { cwd: "/does/not/exist" }), /does not exist/);
  });

  it("kills a command that exceeds its timeout", async () => {
    const marker = `nbx-timeout-${process.pid}`;
    const started = Date.now();
    await assert.rejects(
      sbx.commands.run(`exec -a ${marker} sleep 30`, { timeoutMs: 1000 }),
      (err: unknown) => err instanceof TimeoutError,
    );
    assert.ok(Date.now() - started < 10_000);
    // The process itself is gone too, not only the stream.
    await waitFor(async () =>
      (await sbx.commands.list()).every((p) => !p.args.join(" ").includes(marker)),
    );
  });

  it("runs background commands, lists them, re-attaches with connect and kills them", async () => {
    const h = await sbx.commands.run(
      "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick$i; sleep 0.3; done; sleep 30",
      {
        background: true,
        timeoutMs: 0,
      },
    );
    assert.ok(h.pid > 0);
    const listed = await sbx.commands.list();
    const mine = listed.find((p) => p.pid === h.pid);
    assert.ok(mine, "background process is listed");
    assert.equal(mine.cmd, "/bin/bash");
    await h.disconnect();
    assert.ok(alive(h.pid), "process survives its stream being dropped");

    let seen = "";
    const again = await sbx.commands.connect(h.pid, {
      onStdout: (d) => {
        seen += d;
      },
      timeoutMs: 0,
    });
    await waitFor(() => /tick\d/.test(seen));
    assert.equal(await sbx.commands.kill(h.pid), true);
    const res = await again.wait().catch((e: unknown) => e);
    assert.ok(res instanceof CommandExitError);
    assert.equal(res.exitCode, -1);
    assert.equal(res.error, "signal: killed");
    await waitFor(() => !alive(h.pid));
    assert.equal(await sbx.commands.kill(h.pid), false, "killing a finished process returns false");
  });

  it("kills the whole process group", async () => {
    let out = "";
    const h = await sbx.commands.run("sleep 300 & echo $!; wait", {
      background: true,
      timeoutMs: 0,
      onStdout: (d) => {
        out += d;
      },
    });
    await waitFor(() => /\d+\n/.test(out));
    const grandchild = Number(out.trim());
    assert.ok(alive(grandchild));
    await sbx.commands.kill(h.pid);
    await h.wait().catch(() => undefined);
    await waitFor(() => !alive(grandchild));
  });

  it("sends stdin to a background command and closes it", async () => {
    const h = await sbx.commands.run("cat", { background: true, stdin: true, timeoutMs: 0 });
    await sbx.commands.sendStdin(h.pid, "hello stdin\n");
    await sbx.commands.closeStdin(h.pid);
    const r = await h.wait();
    assert.equal(r.stdout, "hello stdin\n");
    assert.equal(r.exitCode, 0);
  });

  it("gives commands /dev/null stdin unless asked", async () => {
    const r = await sbx.commands.run("cat; echo done");
    assert.equal(r.stdout, "done\n");
  });

  it("reports a missing process as NotFoundError on connect", async () => {
    await assert.rejects(sbx.commands.connect(999_999), (e: unknown) => e instanceof NotFoundError);
  });

  it("drives a PTY: input, resize, kill", async () => {
    let out = "";
    const term = await sbx.pty.create({
      cols: 80,
      rows: 24,
      onData: (d) => {
        out += Buffer.from(d).toString();
      },
      timeoutMs: 0,
    });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size; id -un\n"));
    await waitFor(() => out.includes("24 80") && /\r\nuser\r\n/.test(out), 10_000);
    await sbx.pty.resize(term.pid, { cols: 120, rows: 50 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size\n"));
    await waitFor(() => out.includes("50 120"), 10_000);
    assert.equal(await sbx.pty.kill(term.pid), true);
    const r = await term.wait().catch((e: unknown) => e);
    assert.ok(r instanceof CommandExitError);
    assert.equal(r.error, "signal: killed");
  });

  it("ends a PTY shell that reads exit", async () => {
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {}, timeoutMs: 0 });
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode("exit 3\n"));
    const r = await term.wait().catch((e: unknown) => e);
    assert.ok(r instanceof CommandExitError);
    assert.equal(r.exitCode, 3);
  });
});

describe("process service, raw protocol", () => {
  let envd: EnvdProcess;
  before(async () => {
    envd = await startEnvd();
  });
  after(() => envd.stop());

  it("streams start, data chunks of at most 32 KiB, and exactly one end", async () => {
    const r = await rawStream(`${envd.url}/process.Process/Start`, {
      process: { cmd: "/bin/bash", args: ["-c", "head -c 200000 /dev/zero"] },
      stdin: false,
    });
    assert.equal(r.status, 200);
    type Ev = {
      event: {
        start?: { pid: number };
        data?: { stdout?: string };
        end?: { exitCode?: number; exited?: boolean; status?: string };
      };
    };
    const evs = r.messages as Ev[];
    assert.ok(evs[0]?.event.start?.pid);
    let total = 0;
    for (const e of evs) {
      if (e.event.data?.stdout) {
        const n = Buffer.from(e.event.data.stdout, "base64").length;
        assert.ok(n <= 32 * 1024, `chunk of ${n} bytes`);
        total += n;
      }
    }
    assert.equal(total, 200000);
    const ends = evs.filter((e) => e.event.end);
    assert.equal(ends.length, 1);
    assert.deepEqual(ends[0]?.event.end, { exited: true, status: "exit status 0" });
    assert.equal(evs.at(-1), ends[0], "end is the last event");
    assert.deepEqual(r.endStream, {});
  });

  it("sends keepalive events at the Keepalive-Ping-Interval", async () => {
    const r = await rawStream(
      `${envd.url}/process.Process/Start`,
      { process: { cmd: "/bin/sleep", args: ["2.6"] }, stdin: false },
      { "keepalive-ping-interval": "1" },
    );
    const keepalives = (r.messages as { event: { keepalive?: object } }[]).filter(
      (e) => e.event.keepalive,
    );
    assert.ok(
      keepalives.length >= 2 && keepalives.length <= 3,
      `got ${keepalives.length} keepalives`,
    );
  });

  it("feeds ordered input through StreamInput", async () => {
    const client = processClient(envd.url);
    const stream = client.start({
      process: { cmd: "/bin/cat", args: [] },
      stdin: true,
      tag: "streamed",
    });
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value?.event?.event.case, "start");
    async function* input(): AsyncGenerator<MessageInitShape<typeof StreamInputRequestSchema>> {
      yield {
        event: {
          case: "start" as const,
          value: { process: { selector: { case: "tag" as const, value: "streamed" } } },
        },
      };
      for (let i = 0; i < 20; i++) {
        yield {
          event: {
            case: "data" as const,
            value: { input: { input: { case: "stdin" as const, value: Buffer.from(`${i},`) } } },
          },
        };
      }
      yield { event: { case: "keepalive" as const, value: {} } };
    }
    await client.streamInput(input());
    const list = await client.list({});
    const proc = list.processes.find((p) => p.tag === "streamed");
    assert.ok(proc);
    await client.closeStdin({ process: { selector: { case: "pid", value: proc.pid } } });
    let out = "";
    for (let n = await it.next(); !n.done; n = await it.next()) {
      const ev = n.value.event?.event;
      if (ev?.case === "data" && ev.value.output.case === "stdout")
        out += Buffer.from(ev.value.output.value).toString();
    }
    assert.equal(out, Array.from({ length: 20 }, (_, i) => `${i},`).join(""));
  });

  it("rejects bad requests with the right Connect codes", async () => {
    const client = processClient(envd.url);
    const codeOf = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        return ConnectError.from(e).code;
      }
      return undefined;
    };
    const drain = async (s: AsyncIterable<unknown>) => {
      for await (const _ of s) {
        // consume
      }
    };
    assert.equal(await codeOf(drain(client.start({}))), Code.InvalidArgument, "missing process");
    assert.equal(
      await codeOf(drain(client.start({ process: { cmd: "no-such-binary-xyz" } }))),
      Code.NotFound,
    );
    assert.equal(
      await codeOf(
        client.sendInput({
          process: { selector: { case: "pid", value: 999_999 } },
          input: { input: { case: "stdin", value: new Uint8Array([1]) } },
        }),
      ),
      Code.NotFound,
    );
    assert.equal(
      await codeOf(client.sendSignal({ process: { selector: { case: "pid", value: 999_999 } } })),
      Code.NotFound,
    );
    assert.equal(await codeOf(client.sendSignal({})), Code.InvalidArgument, "missing selector");
    assert.equal(
      await codeOf(
        drain(client.connect({ process: { selector: { case: "tag", value: "nope" } } })),
      ),
      Code.NotFound,
    );
    const user = Buffer.from("nosuchuser:").toString("base64");
    assert.equal(
      await codeOf(
        drain(
          client.start(
            { process: { cmd: "/bin/true" } },
            { headers: { authorization: `Basic ${user}` } },
          ),
        ),
      ),
      Code.InvalidArgument,
      "unknown user",
    );
  });

  it("answers an oversized header with 431 and keeps serving", async () => {
    const res = await fetch(`${envd.url}/health`, { headers: { "x-big": "a".repeat(64 * 1024) } });
    assert.equal(res.status, 431);
    const ok = await fetch(`${envd.url}/health`);
    assert.equal(ok.status, 204);
  });
});

describe("access token", () => {
  const token = "tok_0123456789abcdef";
  let envd: EnvdProcess;
  before(async () => {
    envd = await startEnvd(["--access-token", token]);
  });
  after(() => envd.stop());

  it("serves the SDK that presents the token through sandboxUrl", async () => {
    const sbx = sdkSandbox(envd, { accessToken: token });
    const r = await sbx.commands.run("id -un");
    assert.equal(r.stdout, "user\n");
  });

  it("refuses RPCs with a wrong or missing token (401)", async () => {
    const wrong = sdkSandbox(envd, { accessToken: "wrong" });
    await assert.rejects(
      wrong.commands.run("true"),
      (e: unknown) => (e as Error).name === "AuthenticationError",
    );
    const res = await fetch(`${envd.url}/process.Process/List`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, "unauthenticated");
    const envs = await fetch(`${envd.url}/envs`);
    assert.equal(envs.status, 401);
    assert.deepEqual(await envs.json(), {
      code: 401,
      message: "unauthorized access, please provide a valid access token",
    });
    assert.equal((await fetch(`${envd.url}/health`)).status, 204, "health stays open");
  });
});
