/**
 * GET /v1/events and GET /v1/usage through the real HTTP app on both database kinds. Sandbox
 * rows are written straight to the database (as the reconciler or another control plane
 * would): the triggers' notifications must reach the stream of the sandbox's team only, and
 * the running history must show up in the usage series.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { buildApp } from "../../packages/server/src/api/app.js";
import { authRoutes } from "../../packages/server/src/api/routes/auth.js";
import { eventRoutes } from "../../packages/server/src/api/routes/events.js";
import { usageRoutes } from "../../packages/server/src/api/routes/usage.js";
import { insertPendingHost } from "../../packages/server/src/db/queries/hosts.js";
import {
  insertPendingSandbox,
  transitionSandbox,
} from "../../packages/server/src/db/queries/sandboxes.js";
import { newId, newSandboxId } from "../../packages/server/src/ids.js";
import { SandboxEvents } from "../../packages/server/src/services/sandbox-events.js";
import { parseSse, type SseMessage } from "../../packages/web/src/lib/api/sse.js";
import { type AppFixture, openAppFixture } from "./support/app-fixture.js";
import { DB_KINDS, type TestDb } from "./support/db-fixture.js";

for (const kind of DB_KINDS) {
  describe(`sandbox events and usage (${kind})`, () => {
    let fx: AppFixture;
    let t: TestDb;
    let app: ReturnType<typeof buildApp>;
    let events: SandboxEvents;
    let hostId: string;

    before(async () => {
      fx = await openAppFixture(kind);
      t = fx.t;
      events = new SandboxEvents(t.db, (line) => console.error(line));
      app = buildApp(fx.deps, [authRoutes, eventRoutes(events), usageRoutes]);
      hostId = newId("host");
      await insertPendingHost(t.db, {
        id: hostId,
        name: `events-${hostId.slice(-6)}`,
        createdBy: null,
        tokenId: newId("htok"),
        tokenHash: randomBytes(16).toString("hex"),
        tokenTtlSec: 600,
      });
    });
    after(async () => {
      await events?.close();
      await fx?.close();
    });

    async function signup(who: string): Promise<{ token: string; teamId: string }> {
      const r = await app.request("/v1/auth/signup", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          email: `${who}-${randomBytes(3).toString("hex")}@example.com`,
          password: "correct horse battery",
          name: who,
        }),
      });
      assert.equal(r.status, 201);
      const body = (await r.json()) as { token: string; team: { id: string } };
      return { token: body.token, teamId: body.team.id };
    }

    const newSandbox = (teamId: string, vcpus = 2, memoryMb = 1024) =>
      insertPendingSandbox(t.db, {
        id: newSandboxId(),
        teamId,
        hostId,
        templateId: null,
        template: "base",
        vcpus,
        memoryMb,
        diskSizeMb: 2048,
        timeoutSec: 300,
        allowInternetAccess: true,
        envVars: {},
        metadata: { k: "v" },
        envdAccessToken: null,
      });

    /** Opens the stream and returns a reader of its `sandbox` events. */
    async function openStream(token: string) {
      const ac = new AbortController();
      const res = await app.request("/v1/events", {
        headers: { authorization: `Bearer ${token}` },
        signal: ac.signal,
      });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
      assert.ok(res.body);
      const it = parseSse(res.body)[Symbol.asyncIterator]();
      /** The next message, or a failure after 10 s (never a hang). */
      const within = async () => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("no event within 10 s")), 10_000);
        });
        try {
          return await Promise.race([it.next(), late]);
        } finally {
          clearTimeout(timer);
        }
      };
      const first = await within();
      assert.equal((first.value as SseMessage).retry, 2000);
      /** The next message that is not a ping, whatever its event. */
      const nextMessage = async (): Promise<SseMessage> => {
        for (;;) {
          const m = await within();
          assert.ok(!m.done, "the stream ended");
          if (m.value.event !== "message") return m.value;
        }
      };
      const next = async (): Promise<{ type: string; sandbox: { id: string; status: string } }> => {
        const m = await nextMessage();
        assert.equal(m.event, "sandbox", `a sandbox event, not ${m.event}`);
        return JSON.parse(m.data);
      };
      const close = async () => {
        ac.abort();
        // The server's handler ends with the request: the stream reports its end.
        const end = await within();
        assert.equal(end.done, true);
      };
      return { next, nextMessage, close };
    }

    it("streams created, status and destroyed events of the caller's team only", async () => {
      const a = await signup("ann");
      const b = await signup("bob");
      const streamA = await openStream(a.token);
      const streamB = await openStream(b.token);

      const other = await newSandbox(b.teamId);
      const sb = await newSandbox(a.teamId);
      const created = await streamA.next();
      assert.equal(created.type, "created");
      assert.equal(created.sandbox.id, sb.id);
      assert.equal(created.sandbox.status, "pending");

      await transitionSandbox(t.db, sb.id, ["pending"], "running", { started: true });
      const running = await streamA.next();
      assert.deepEqual([running.type, running.sandbox.status], ["status", "running"]);
      // A same-status write is no event.
      await transitionSandbox(t.db, sb.id, ["running"], "running");
      await transitionSandbox(t.db, sb.id, ["running"], "paused");
      assert.equal((await streamA.next()).sandbox.status, "paused");
      await transitionSandbox(t.db, sb.id, ["paused"], "stopped", { ended: true });
      const destroyed = await streamA.next();
      assert.deepEqual([destroyed.type, destroyed.sandbox.id], ["destroyed", sb.id]);

      // Bob's stream saw his own sandbox and nothing of Ann's.
      const bobs = await streamB.next();
      assert.deepEqual([bobs.type, bobs.sandbox.id], ["created", other.id]);
      await transitionSandbox(t.db, other.id, ["pending"], "error", { error: "boom" });
      const bobNext = await streamB.next();
      assert.deepEqual([bobNext.sandbox.id, bobNext.sandbox.status], [other.id, "error"]);
      await streamA.close();
      await streamB.close();
      assert.equal(events.subscriberCount, 0, "the handlers unsubscribed");
    });

    // PGlite runs in-process: its feed has no connection to cut.
    const cutOff = kind === "postgres" ? it : () => {};
    cutOff("a stream whose database feed was cut off is told to re-read, and goes on", async () => {
      const a = await signup("dee");
      const stream = await openStream(a.token);
      // The control plane's LISTEN connection, ended by the server as a failover would.
      const killed = await t.db.query<{ pid: number }>(
        `SELECT pg_terminate_backend(pid) AS pid FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()`,
      );
      assert.equal(killed.length, 1, "one listening connection");
      const resync = await stream.nextMessage();
      assert.deepEqual([resync.event, resync.data], ["resync", "{}"]);
      // Listening again: later changes arrive as before.
      const sb = await newSandbox(a.teamId);
      const created = await stream.next();
      assert.deepEqual([created.type, created.sandbox.id], ["created", sb.id]);
      await stream.close();
    });

    it("needs credentials", async () => {
      const res = await app.request("/v1/events");
      assert.equal(res.status, 401);
      const usage = await app.request("/v1/usage");
      assert.equal(usage.status, 401);
    });

    it("usage counts what runs now and charts the last 24 hours", async () => {
      const a = await signup("cat");
      const get = async () => {
        const r = await app.request("/v1/usage", {
          headers: { authorization: `Bearer ${a.token}` },
        });
        assert.equal(r.status, 200);
        return (await r.json()) as {
          running: number;
          paused: number;
          vcpus_reserved: number;
          memory_mb_reserved: number;
          bucket_minutes: number;
          series: { t: string; running: number }[];
        };
      };
      const empty = await get();
      assert.deepEqual([empty.running, empty.paused, empty.vcpus_reserved], [0, 0, 0]);
      assert.equal(empty.bucket_minutes, 5);
      // 24 h of 5-minute buckets, the current one included.
      assert.ok(empty.series.length >= 288 && empty.series.length <= 290, `${empty.series.length}`);
      assert.ok(empty.series.every((b) => b.running === 0));

      const s1 = await newSandbox(a.teamId, 2, 1024);
      const s2 = await newSandbox(a.teamId, 1, 512);
      const s3 = await newSandbox(a.teamId, 4, 4096);
      for (const s of [s1, s2, s3])
        await transitionSandbox(t.db, s.id, ["pending"], "running", { started: true });
      await transitionSandbox(t.db, s3.id, ["running"], "paused");
      const now = await get();
      assert.deepEqual(
        [now.running, now.paused, now.vcpus_reserved, now.memory_mb_reserved],
        [2, 1, 3, 1536],
      );
      const last = now.series.at(-1);
      // s3 ran in this bucket too before it paused.
      assert.equal(last?.running, 3);
      assert.ok(now.series.slice(0, -2).every((b) => b.running === 0));
      const times = now.series.map((b) => Date.parse(b.t));
      assert.ok(times.every((v, i) => i === 0 || v - (times[i - 1] ?? 0) === 5 * 60_000));
    });
  });
}
