/**
 * The control plane end to end, through its HTTP API, against a real host agent. The same
 * cases run for every runtime (and the two database kinds are split across the runtimes).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { NestboxClient } from "@nestbox/sdk/client";
import { namespacesOf } from "../../agent/support/runtime-conformance.js";
import { until } from "./cli-process.js";
import { type Stack, type StackOptions, startStack } from "./control-plane-harness.js";

/** `mib` MiB of deterministic pseudo-random bytes, produced as they are read, and their digest. */
function generated(mib: number): { stream: Readable; digest: Promise<string> } {
  const hash = createHash("sha256");
  const block = Buffer.alloc(1 << 20);
  let sent = 0;
  let done!: (hex: string) => void;
  const digest = new Promise<string>((r) => {
    done = r;
  });
  const stream = new Readable({
    read() {
      if (sent === mib) {
        done(hash.digest("hex"));
        this.push(null);
        return;
      }
      for (let i = 0; i < block.length; i += 4)
        block.writeUInt32LE((sent * 2654435761 + i * 40503) >>> 0, i);
      const chunk = Buffer.from(block);
      hash.update(chunk);
      sent++;
      this.push(chunk);
    },
  });
  return { stream, digest };
}

export function controlPlaneSuite(o: StackOptions): void {
  describe(`control plane end to end (${o.runtime} runtime, ${o.db} database)`, {
    concurrency: false,
  }, () => {
    let s: Stack;
    const created: string[] = [];
    const create = async (body: Record<string, unknown> = {}, key?: string) => {
      const r = await s.api("POST", "/v1/sandboxes", body, key);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      created.push(r.body.id);
      return r.body;
    };
    const exec = (
      id: string,
      cmd: string,
      args: string[] = [],
      key?: string,
      timeoutSec?: number,
    ) =>
      s.api(
        "POST",
        `/v1/sandboxes/${id}/exec`,
        { cmd, args, ...(timeoutSec ? { timeout_sec: timeoutSec } : {}) },
        key,
      );
    const sh = async (id: string, script: string, timeoutSec?: number) => {
      const r = await exec(id, "/bin/sh", ["-c", script], undefined, timeoutSec);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.timed_out, false, `timed out: ${JSON.stringify(r.body)}`);
      return r.body as { stdout: string; stderr: string; exit_code: number };
    };

    before(async () => {
      s = await startStack(o);
    });
    after(async () => {
      await s?.close();
    });

    it("creates a sandbox that runs commands, lists it with its metadata, and destroys it", async () => {
      const sb = await create({ metadata: { suite: "e2e", n: "1" }, env_vars: { GREETING: "hi" } });
      assert.equal(sb.status, "running");
      assert.match(sb.id, /^[a-z0-9]{20}$/);
      assert.equal(sb.host_id, s.hostId);
      const out = await sh(sb.id, 'echo "$GREETING from $(id -un)"; echo err >&2; exit 3');
      assert.equal(out.stdout, "hi from user\n");
      assert.equal(out.stderr, "err\n");
      assert.equal(out.exit_code, 3);
      // A clone wakes with its template's clock; envd sets it from the agent's /init.
      const sentAt = Date.now();
      const guestNow = Number((await sh(sb.id, "date +%s.%N")).stdout);
      const skew = guestNow - (sentAt + Date.now()) / 2000;
      assert.ok(Math.abs(skew) < 3, `guest clock off by ${skew.toFixed(1)} s`);

      const listed = await s.api(
        "GET",
        `/v1/sandboxes?metadata=${encodeURIComponent("suite=e2e")}`,
      );
      assert.equal(listed.status, 200);
      assert.deepEqual(
        listed.body.sandboxes.map((x: { id: string }) => x.id),
        [sb.id],
      );
      const none = await s.api(
        "GET",
        `/v1/sandboxes?metadata=${encodeURIComponent("suite=other")}`,
      );
      assert.equal(none.body.sandboxes.length, 0);

      assert.equal((await s.api("DELETE", `/v1/sandboxes/${sb.id}`)).status, 204);
      const gone = await s.api("GET", `/v1/sandboxes/${sb.id}`);
      assert.equal(gone.status, 200);
      assert.equal(gone.body.status, "stopped");
      assert.ok(gone.body.ended_at);
      assert.equal((await exec(sb.id, "/bin/true")).status, 409);
      const agentList = await s.agent.client.listSandboxes({});
      assert.ok(!agentList.sandboxes.some((x) => x.sandboxId === sb.id), "the agent still has it");
      // Destroyed sandboxes are history: not listed by default, listed when asked for.
      const defaults = await s.api("GET", "/v1/sandboxes");
      assert.ok(!defaults.body.sandboxes.some((x: { id: string }) => x.id === sb.id));
      const stopped = await s.api("GET", "/v1/sandboxes?state=stopped");
      assert.ok(stopped.body.sandboxes.some((x: { id: string }) => x.id === sb.id));
    });

    it("pauses and resumes keeping files and a background process", async () => {
      const sb = await create();
      await sh(sb.id, "echo kept > /tmp/kept; (sleep 1000 &) ; true");
      const paused = await s.api("POST", `/v1/sandboxes/${sb.id}/pause`);
      assert.equal(paused.status, 200, JSON.stringify(paused.body));
      assert.equal(paused.body.status, "paused");
      assert.equal(
        (await s.api("POST", `/v1/sandboxes/${sb.id}/pause`)).body.error.code,
        "invalid_state",
      );
      const refused = await exec(sb.id, "/bin/true");
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, "invalid_state");
      const resumed = await s.api("POST", `/v1/sandboxes/${sb.id}/resume`);
      assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
      assert.equal(resumed.body.status, "running");
      assert.equal((await sh(sb.id, "cat /tmp/kept")).stdout, "kept\n");
      assert.equal((await sh(sb.id, "pgrep -c -x sleep")).stdout.trim(), "1");
      assert.equal((await s.api("POST", `/v1/sandboxes/${sb.id}/resume`)).status, 409);
    });

    it("reports metrics, pings and changes the timeout", async () => {
      const sb = await create();
      await sleep(1500);
      const m = await s.api("GET", `/v1/sandboxes/${sb.id}/metrics?range=10m`);
      assert.equal(m.status, 200);
      assert.ok(m.body.points.length >= 1, "no metric points");
      assert.ok(m.body.points[0].mem_bytes > 0);
      assert.equal((await s.api("GET", `/v1/sandboxes/${sb.id}/metrics?range=1y`)).status, 400);
      assert.equal((await s.api("POST", `/v1/sandboxes/${sb.id}/ping`)).status, 204);
      const t = await s.api("POST", `/v1/sandboxes/${sb.id}/timeout`, { timeout_sec: 900 });
      assert.equal(t.status, 200);
      assert.equal(t.body.timeout_sec, 900);
      // Paused: the metrics were flushed to the database before the pause.
      assert.equal((await s.api("POST", `/v1/sandboxes/${sb.id}/pause`)).status, 200);
      const stored = await s.api("GET", `/v1/sandboxes/${sb.id}/metrics?range=10m`);
      assert.equal(stored.status, 200);
      assert.ok(stored.body.points.length >= 1, "no stored points after pause");
    });

    it("picks up the agent's TTL auto-pause and notices sandboxes that vanished", async () => {
      // Never auto-paused at first; the new timeout reaches the host's reaper.
      const idle = await create({ timeout_sec: 0 });
      await sleep(2500);
      assert.equal((await s.api("GET", `/v1/sandboxes/${idle.id}`)).body.status, "running");
      assert.equal(
        (await s.api("POST", `/v1/sandboxes/${idle.id}/timeout`, { timeout_sec: 2 })).status,
        200,
      );
      const paused = await until(
        "auto-pause in the database",
        async () => {
          const r = await s.api("GET", `/v1/sandboxes/${idle.id}`);
          return r.body.status === "paused" ? r.body : undefined;
        },
        60_000,
      );
      assert.equal(paused.status, "paused");

      const doomed = await create();
      await s.agent.client.destroySandbox({ sandboxId: doomed.id });
      await until("a vanished sandbox to be marked stopped", async () => {
        const r = await s.api("GET", `/v1/sandboxes/${doomed.id}`);
        return r.body.status === "stopped" ? true : undefined;
      });

      // One the database has never heard of is destroyed on the host.
      const stray = await s.agent.client.createSandbox({ template: "base", timeoutSec: 0 });
      await until("the stray sandbox to be destroyed", async () => {
        const l = await s.agent.client.listSandboxes({});
        return l.sandboxes.some((x) => x.sandboxId === stray.sandboxId) ? undefined : true;
      });
    });

    it("keeps everything across a control plane restart", async () => {
      const sb = await create({ metadata: { restart: "yes" } });
      await sh(sb.id, "echo before > /tmp/restart");
      await s.restartServer();
      const got = await s.api("GET", `/v1/sandboxes/${sb.id}`);
      assert.equal(got.status, 200);
      assert.equal(got.body.status, "running");
      assert.equal((await sh(sb.id, "cat /tmp/restart")).stdout, "before\n");
      // Reconciliation after the restart leaves the running sandbox alone.
      await sleep(2500);
      assert.equal((await s.api("GET", `/v1/sandboxes/${sb.id}`)).body.status, "running");
    });

    it("snapshots a sandbox into a team template and creates from it", async () => {
      const sb = await create();
      await sh(sb.id, "echo from-snapshot > /home/user/mark");
      const t = await s.api("POST", "/v1/templates", {
        sandbox_id: sb.id,
        name: `snap-${o.instance}`,
      });
      assert.equal(t.status, 201, JSON.stringify(t.body));
      assert.equal(t.body.kind, "snapshot");
      assert.equal((await s.api("GET", `/v1/sandboxes/${sb.id}`)).body.status, "stopped");
      const dup = await s.api("POST", "/v1/templates", {
        sandbox_id: sb.id,
        name: `snap-${o.instance}`,
      });
      assert.equal(dup.status, 409);
      const reserved = await create();
      const taken = await s.api("POST", "/v1/templates", { sandbox_id: reserved.id, name: "base" });
      assert.equal(taken.status, 409);
      assert.equal(taken.body.error.code, "name_taken");

      const list = await s.api("GET", "/v1/templates");
      const names = list.body.templates.map((x: { name: string }) => x.name);
      assert.ok(names.includes("base") && names.includes(`snap-${o.instance}`));
      const child = await create({ template: `snap-${o.instance}` });
      assert.equal((await sh(child.id, "cat /home/user/mark")).stdout, "from-snapshot\n");
      assert.equal((await s.api("DELETE", "/v1/templates/base")).status, 403);
      assert.equal((await s.api("DELETE", `/v1/sandboxes/${child.id}`)).status, 204);
      assert.equal((await s.api("DELETE", `/v1/templates/snap-${o.instance}`)).status, 204);
      assert.equal(
        (await s.api("POST", "/v1/sandboxes", { template: `snap-${o.instance}` })).status,
        404,
      );
    });

    it("keeps teams apart: another team's key gets 404 on every sandbox route", async () => {
      const sb = await create();
      const signup = await fetch(`${s.apiUrl}/v1/auth/signup`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          email: `other-${o.instance}@example.test`,
          password: "correct horse battery",
          name: "Other",
        }),
      });
      assert.equal(signup.status, 201);
      const { token } = (await signup.json()) as { token: string };
      const keyRes = await fetch(`${s.apiUrl}/v1/api-keys`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
        body: JSON.stringify({ name: "other" }),
      });
      assert.equal(keyRes.status, 201);
      const otherKey = ((await keyRes.json()) as { key: string }).key;
      const id = sb.id;
      const routes: [string, string, unknown?][] = [
        ["GET", `/v1/sandboxes/${id}`],
        ["DELETE", `/v1/sandboxes/${id}`],
        ["POST", `/v1/sandboxes/${id}/pause`],
        ["POST", `/v1/sandboxes/${id}/resume`],
        ["POST", `/v1/sandboxes/${id}/ping`],
        ["POST", `/v1/sandboxes/${id}/timeout`, { timeout_sec: 5 }],
        ["GET", `/v1/sandboxes/${id}/metrics`],
        ["POST", `/v1/sandboxes/${id}/exec`, { cmd: "/bin/true" }],
        ["GET", `/v1/sandboxes/${id}/processes`],
        ["POST", `/v1/sandboxes/${id}/processes`, { cmd: "/bin/true" }],
        ["GET", `/v1/sandboxes/${id}/files?path=/etc/hostname`],
        ["GET", `/v1/sandboxes/${id}/files/list?path=/`],
        ["GET", `/v1/sandboxes/${id}/files/stat?path=/`],
        ["POST", `/v1/sandboxes/${id}/files/mkdir`, { path: "/tmp/x" }],
        ["POST", `/v1/sandboxes/${id}/files/move`, { source: "/tmp/a", destination: "/tmp/b" }],
        ["DELETE", `/v1/sandboxes/${id}/files?path=/tmp/x`],
        ["POST", "/v1/templates", { sandbox_id: id, name: "stolen" }],
      ];
      for (const [method, route, body] of routes) {
        const r = await s.api(method, route, body, otherKey);
        assert.equal(r.status, 404, `${method} ${route} → ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error.code, "not_found");
        assert.ok(!JSON.stringify(r.body).includes(s.hostId), "leaked the host");
      }
      const list = await s.api("GET", "/v1/sandboxes", undefined, otherKey);
      assert.equal(list.body.sandboxes.length, 0);
      // Still intact for its owner.
      assert.equal((await s.api("GET", `/v1/sandboxes/${id}`)).body.status, "running");
    });

    it("rejects bad input with 400 and a named field, and unknown ids with 404", async () => {
      const cases: [string, string, unknown, number, string?][] = [
        ["POST", "/v1/sandboxes", "{not json", 400],
        ["POST", "/v1/sandboxes", { vcpus: "two" }, 400, "vcpus"],
        ["POST", "/v1/sandboxes", { memory_mb: 1 }, 400, "memory_mb"],
        ["POST", "/v1/sandboxes", { template: "../etc" }, 400, "template"],
        ["POST", "/v1/sandboxes", { metadata: { k: "x".repeat(5000) } }, 400, "metadata.k"],
        ["POST", "/v1/sandboxes", { env_vars: { "BAD NAME": "1" } }, 400, "env_vars"],
        ["POST", "/v1/sandboxes", { surprise: true }, 400],
        ["POST", "/v1/sandboxes", { template: "no-such-template" }, 404],
        ["GET", "/v1/sandboxes/aaaaaaaaaaaaaaaaaaaa", undefined, 404],
        ["GET", "/v1/sandboxes/NOT-AN-ID", undefined, 400, "id"],
        ["GET", "/v1/sandboxes?limit=0", undefined, 400, "limit"],
        ["GET", "/v1/sandboxes?state=bogus", undefined, 400, "state"],
        ["GET", "/v1/sandboxes?next_token=!!", undefined, 400, "next_token"],
      ];
      for (const [method, route, body, status, field] of cases) {
        const r = await s.api(method, route, body);
        assert.equal(
          r.status,
          status,
          `${method} ${route} ${JSON.stringify(body)} → ${r.status} ${JSON.stringify(r.body)}`,
        );
        assert.equal(typeof r.body.error?.code, "string");
        assert.equal(typeof r.body.error?.message, "string");
        if (field) assert.equal(r.body.error.field, field, JSON.stringify(r.body));
      }
      const unauth = await s.api("GET", "/v1/sandboxes", undefined, `nbx_${"0".repeat(40)}`);
      assert.equal(unauth.status, 401);
    });

    it("pages through sandboxes with next_token", async () => {
      const mine = [
        await create({ metadata: { page: "yes" } }),
        await create({ metadata: { page: "yes" } }),
        await create({ metadata: { page: "yes" } }),
      ];
      const seen: string[] = [];
      let token: string | null = null;
      do {
        const q: string = `/v1/sandboxes?limit=2&metadata=${encodeURIComponent("page=yes")}${token ? `&next_token=${token}` : ""}`;
        const r = await s.api("GET", q);
        assert.equal(r.status, 200);
        assert.ok(r.body.sandboxes.length <= 2);
        seen.push(...r.body.sandboxes.map((x: { id: string }) => x.id));
        token = r.body.next_token;
      } while (token);
      assert.deepEqual(new Set(seen), new Set(mine.map((m) => m.id)));
      assert.equal(seen.length, 3);
    });

    it("streams commands over WebSocket, runs background processes and drives a terminal", async () => {
      const sb = await create();
      const client = new NestboxClient({ apiUrl: s.apiUrl, apiKey: s.adminKey });
      const chunks: string[] = [];
      const code = await client.execStream(
        sb.id,
        "/bin/sh",
        ["-c", "for i in 1 2 3; do echo $i; sleep 0.2; done; echo oops >&2; exit 5"],
        {
          onStdout: (b) => chunks.push(b.toString()),
          onStderr: (b) => chunks.push(`E:${b.toString()}`),
        },
      );
      assert.equal(code, 5);
      assert.equal(chunks.filter((c) => !c.startsWith("E:")).join(""), "1\n2\n3\n");
      assert.ok(chunks.includes("E:oops\n"));
      assert.ok(chunks.filter((c) => !c.startsWith("E:")).length >= 2, "output was not streamed");

      const handle = await client.startExecStream(sb.id, "/bin/sleep", ["100"]);
      await handle.kill();
      assert.notEqual(await handle.exitCode, 0);
      assert.equal((await sh(sb.id, "pgrep -c -x sleep || true")).stdout.trim(), "0");

      const bg = await client.processes.start(sb.id, {
        cmd: "/bin/sleep",
        args: ["300"],
        tag: "napper",
      });
      assert.equal(bg.tag, "napper");
      const listed = await client.processes.list(sb.id);
      assert.ok(listed.some((p) => p.pid === bg.pid && p.tag === "napper"));
      await client.processes.signal(sb.id, "napper", "SIGKILL");
      await until("the background process to go", async () =>
        (await client.processes.list(sb.id)).some((p) => p.pid === bg.pid) ? undefined : true,
      );

      let screen = "";
      const term = await client.pty(
        sb.id,
        { cols: 80, rows: 24, tag: "term1" },
        { onData: (b) => (screen += b.toString()) },
      );
      await term.ready();
      await term.write("echo pty-$((6*7))\n");
      await until("terminal output", async () => (screen.includes("pty-42") ? true : undefined));
      await term.resize({ cols: 120, rows: 40 });
      await term.write("stty size\n");
      await until("the new size", async () => (screen.includes("40 120") ? true : undefined));
      term.close();
      let again = "";
      const back = await client.ptyConnect(sb.id, "term1", {
        onData: (b) => (again += b.toString()),
      });
      await back.ready();
      await back.write("echo still-$((1+1))\n");
      await until("output after reconnecting", async () =>
        again.includes("still-2") ? true : undefined,
      );
      await back.write("exit 4\n");
      assert.equal(await back.exitCode, 4);
    });

    it("round-trips a 200 MiB file with the same checksum", async () => {
      const sb = await create();
      const client = new NestboxClient({ apiUrl: s.apiUrl, apiKey: s.adminKey });
      const src = generated(200);
      const entry = await client.files.upload(sb.id, "/tmp/big.bin", src.stream);
      assert.equal(entry.size, 200 << 20);
      assert.equal(entry.owner, "user");
      await assert.rejects(
        client.files.upload(sb.id, "/etc/nope", "x"),
        /permission|denied|forbidden/i,
      );
      assert.equal(
        (await client.files.upload(sb.id, "/etc/yes", "x", { user: "root" })).owner,
        "root",
      );
      const down = createHash("sha256");
      let bytes = 0;
      for await (const chunk of (await client.files.download(
        sb.id,
        "/tmp/big.bin",
      )) as unknown as AsyncIterable<Uint8Array>) {
        down.update(chunk);
        bytes += chunk.length;
      }
      assert.equal(bytes, 200 << 20);
      assert.equal(down.digest("hex"), await src.digest);
      // Hashing 200 MiB under TCG on a loaded machine has taken over the default 30 s.
      const inside = await sh(sb.id, "sha256sum /tmp/big.bin | cut -d' ' -f1", 600);
      assert.equal(inside.stdout.trim(), await src.digest);
    });

    it("cleans up: destroying every sandbox leaves nothing on the host", async () => {
      for (const id of created) {
        const r = await s.api("DELETE", `/v1/sandboxes/${id}`);
        assert.equal(r.status, 204, `${id}: ${JSON.stringify(r.body)}`);
      }
      const l = await s.agent.client.listSandboxes({});
      assert.deepEqual(
        l.sandboxes.map((x) => x.sandboxId),
        [],
      );
    });

    it("a forced host delete stops the sandboxes in the database and terminates the agent", async () => {
      const sb = await create();
      const password = readFileSync(path.join(s.dataDir, "admin-password"), "utf8").trim();
      const login = await fetch(`${s.apiUrl}/v1/auth/login`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ email: "admin@localhost", password }),
      });
      assert.equal(login.status, 200);
      const { token } = (await login.json()) as { token: string };
      const admin = { Authorization: `Bearer ${token}` };
      const refused = await fetch(`${s.apiUrl}/v1/hosts/${s.hostId}`, {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(refused.status, 409, "a host with a live sandbox needs force");
      assert.deepEqual(
        (await s.agent.client.listSandboxes({})).sandboxes.map((x) => x.sandboxId),
        [sb.id],
      );
      const exited = once(s.agent.child, "exit");
      const forced = await fetch(`${s.apiUrl}/v1/hosts/${s.hostId}?force=true`, {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(forced.status, 204, await forced.text());
      const got = await s.api("GET", `/v1/sandboxes/${sb.id}`);
      assert.equal(got.body.status, "stopped");
      // Terminate destroyed the sandbox before answering; the agent then exits by itself.
      const [code] = (await Promise.race([
        exited,
        sleep(30_000).then(() => ["still running"]),
      ])) as [unknown];
      assert.equal(code, 0, `the agent should have exited:\n${s.agent.logs().slice(-2000)}`);
      assert.deepEqual(namespacesOf(o.instance), [], "no network namespace of the agent is left");
    });
  });
}
