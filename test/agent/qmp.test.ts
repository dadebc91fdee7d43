// QMP client against a real QEMU (no guest needed: `-S` keeps the CPUs stopped), plus framing
// edge cases against a fake QMP server (partial lines, several messages per chunk, close).
//
//   node --import tsx --test test/agent/qmp.test.ts
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { QmpClient, QmpConnectionError, QmpError } from "../../packages/agent/src/qemu/qmp.js";

const dir = mkdtempSync(join(tmpdir(), "nbx-qmp-test-"));
let qemu: ChildProcess | undefined;
let qemuExit: string | undefined;
const servers: Server[] = [];

function startQemu(socket: string, extra: string[] = []): ChildProcess {
  const child = spawn(
    "qemu-system-x86_64",
    [
      "-M",
      "microvm",
      "-accel",
      "tcg",
      "-m",
      "64M",
      "-S",
      "-nodefaults",
      "-display",
      "none",
      "-qmp",
      `unix:${socket},server=on,wait=off`,
      ...extra,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  child.on("exit", (code, signal) => {
    qemuExit = `exited ${code ?? signal}`;
  });
  return child;
}

before(() => {
  qemu = startQemu(join(dir, "qmp.sock"));
});

after(async () => {
  if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
    const gone = new Promise((resolve) => qemu?.once("exit", resolve));
    qemu.kill("SIGKILL");
    await gone;
  }
  for (const server of servers) server.close();
  rmSync(dir, { recursive: true, force: true });
});

test("connects while QEMU is still creating the socket, runs commands, typed errors", async () => {
  const started = Date.now();
  const qmp = await QmpClient.connect(join(dir, "qmp.sock"), {
    timeoutMs: 10_000,
    abortCheck: () => qemuExit,
  });
  const connectMs = Date.now() - started;
  try {
    const status = await qmp.execute<{ status: string; running: boolean }>("query-status");
    assert.equal(status.status, "prelaunch");
    assert.equal(status.running, false);
    const version = await qmp.execute<{ qemu: { major: number } }>("query-version");
    assert.ok(version.qemu.major >= 7);
    await assert.rejects(qmp.execute("no-such-command"), (error: unknown) => {
      assert.ok(error instanceof QmpError);
      assert.equal(error.errorClass, "CommandNotFound");
      assert.match(error.desc, /no-such-command/);
      return true;
    });
    await assert.rejects(
      qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "no-such-cap", state: true }],
      }),
      QmpError,
    );
    // Several commands in flight at once are answered to the right callers.
    const answers = await Promise.all([
      qmp.execute<{ status: string }>("query-status"),
      qmp.execute<{ qemu: { major: number } }>("query-version"),
      qmp.execute<{ status: string }>("query-status"),
    ]);
    assert.equal(answers[0].status, "prelaunch");
    assert.ok(answers[1].qemu.major >= 7);
    // Events: cont → RESUME, stop → STOP.
    await qmp.execute("cont");
    await qmp.waitForEvent("RESUME", 5_000);
    await qmp.execute("stop");
    const stop = await qmp.waitForEvent("STOP", 5_000);
    assert.ok(stop.timestamp);
    await assert.rejects(qmp.waitForEvent("RESUME", 100), QmpConnectionError);
    // Migration to a file through exec: (QEMU 7.2 has no file: URI).
    await qmp.execute("migrate", { uri: `exec:cat > ${join(dir, "state")}` });
    const info = await qmp.waitForMigration({ timeoutMs: 30_000 });
    assert.equal(info.status, "completed");
    const migration = await qmp
      .waitForEvent("MIGRATION", 1_000, (e) => e.data?.status === "completed")
      .catch(() => undefined);
    // MIGRATION events only come with the `events` capability; their absence is fine.
    void migration;
    // quit: SHUTDOWN event, then the connection closes and pending/future calls reject.
    await qmp.execute("quit");
    await qmp.waitForEvent("SHUTDOWN", 5_000).catch((error: unknown) => {
      // The socket may close before the event is read; closed is what matters.
      assert.ok(error instanceof QmpConnectionError);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(qmp.closed);
    await assert.rejects(qmp.execute("query-status"), (error: unknown) => {
      assert.ok(error instanceof QmpConnectionError);
      assert.equal(error.reason, "closed");
      return true;
    });
  } finally {
    qmp.close();
  }
  assert.ok(connectMs < 5_000, `connect took ${connectMs} ms`);
});

test("a failed migration rejects with QEMU's error description", async () => {
  const socket = join(dir, "qmp2.sock");
  const child = startQemu(socket);
  const qmp = await QmpClient.connect(socket);
  try {
    await qmp.execute("migrate", { uri: "exec:exit 3" });
    await assert.rejects(qmp.waitForMigration({ timeoutMs: 10_000 }), (error: unknown) => {
      assert.ok(error instanceof QmpError);
      assert.equal(error.errorClass, "MigrationFailed");
      return true;
    });
  } finally {
    qmp.close();
    child.kill("SIGKILL");
  }
});

test("connect gives up at the deadline or when told to", async () => {
  const missing = join(dir, "never.sock");
  const started = Date.now();
  await assert.rejects(QmpClient.connect(missing, { timeoutMs: 200 }), (error: unknown) => {
    assert.ok(error instanceof QmpConnectionError);
    assert.equal(error.reason, "connect");
    return true;
  });
  assert.ok(Date.now() - started < 2_000);
  await assert.rejects(
    QmpClient.connect(missing, { timeoutMs: 10_000, abortCheck: () => "QEMU exited (1)" }),
    /QEMU exited/,
  );
});

/** A fake QMP server whose writes are split and joined arbitrarily. */
function fakeServer(path: string, onLine: (socket: Socket, line: string) => void): Promise<void> {
  return new Promise((resolve) => {
    const server = createServer((socket) => {
      socket.setEncoding("utf8");
      // Greeting split across two writes, in the middle of the JSON.
      const greeting = '{"QMP": {"version": {}, "capabilities": []}}\n';
      socket.write(greeting.slice(0, 10));
      setTimeout(() => socket.write(greeting.slice(10)), 20);
      let buf = "";
      socket.on("data", (chunk: string) => {
        buf += chunk;
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          onLine(socket, buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          nl = buf.indexOf("\n");
        }
      });
    });
    servers.push(server);
    server.listen(path, () => resolve());
  });
}

test("framing: partial lines, several messages per chunk, events between answers, close", async () => {
  const path = join(dir, "fake.sock");
  let serverSocket: Socket | undefined;
  await fakeServer(path, (socket, line) => {
    serverSocket = socket;
    const msg = JSON.parse(line) as { execute: string; id: string };
    if (msg.execute === "qmp_capabilities") {
      socket.write(`{"return": {}, "id": "${msg.id}"}\n`);
    } else if (msg.execute === "two") {
      // An event and the answer in one chunk, then the answer's tail split off.
      const answer = `{"return": {"n": 2}, "id": "${msg.id}"}\n`;
      socket.write(`{"event": "STOP", "data": {}}\n${answer.slice(0, 5)}`);
      setTimeout(() => socket.write(answer.slice(5)), 20);
    } else if (msg.execute === "hang") {
      // never answered: the close below must reject it
    }
  });
  const qmp = await QmpClient.connect(path);
  const two = await qmp.execute<{ n: number }>("two");
  assert.equal(two.n, 2);
  const stop = await qmp.waitForEvent("STOP", 1_000);
  assert.equal(stop.event, "STOP");
  const hanging = qmp.execute("hang");
  serverSocket?.destroy();
  await assert.rejects(hanging, (error: unknown) => {
    assert.ok(error instanceof QmpConnectionError);
    assert.equal(error.reason, "closed");
    return true;
  });
  const events: string[] = [];
  for await (const event of qmp.eventStream()) events.push(event.event);
  assert.deepEqual(events, []); // the stream ends once the connection is gone
  qmp.close();
});
