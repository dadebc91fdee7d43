/**
 * What keeps the periodic jobs of several control planes from doing work twice, on both database
 * kinds: the expiry job's per-sandbox claims (migration 0009) and the housekeeping job (pruning
 * under an advisory lock). The whole path with real replicas is test/e2e/replicas.test.ts.
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ensurePlatformTeam } from "../../packages/server/src/bootstrap/seed.js";
import {
  claimExpiry,
  dueUnclaimedSandboxes,
  releaseExpiry,
  renewExpiry,
} from "../../packages/server/src/db/queries/expiry.js";
import {
  insertMetricPoints,
  insertPendingSandbox,
  transitionSandbox,
} from "../../packages/server/src/db/queries/sandboxes.js";
import { insertUserSession } from "../../packages/server/src/db/queries/user-sessions.js";
import { insertUser } from "../../packages/server/src/db/queries/users.js";
import { newSandboxId } from "../../packages/server/src/ids.js";
import { Housekeeping } from "../../packages/server/src/services/housekeeping.js";
import { DB_KINDS, openTestDb, type TestDb } from "./support/db-fixture.js";

for (const kind of DB_KINDS) {
  describe(`periodic jobs of several replicas (${kind})`, () => {
    let t: TestDb;
    let teamId: string;
    beforeEach(async () => {
      t = await openTestDb(kind);
      teamId = (await ensurePlatformTeam(t.db)).id;
      await t.db.query("INSERT INTO hosts (id, name) VALUES ('host_x', 'x')");
    });
    afterEach(async () => {
      await t.close();
    });

    /** A running sandbox whose end was `endedSecAgo` seconds ago (negative: still ahead). */
    async function runningSandbox(endedSecAgo: number): Promise<string> {
      const id = newSandboxId();
      await insertPendingSandbox(t.db, {
        id,
        teamId,
        hostId: "host_x",
        templateId: null,
        template: "base",
        vcpus: 1,
        memoryMb: 256,
        diskSizeMb: 1024,
        timeoutSec: 0,
        allowInternetAccess: false,
        envVars: {},
        metadata: {},
        envdAccessToken: null,
        endInSec: -endedSecAgo,
      });
      assert.ok(await transitionSandbox(t.db, id, ["pending"], "running", { started: true }));
      return id;
    }

    const due = async () => (await dueUnclaimedSandboxes(t.db, 50)).map((r) => r.id);

    it("a due sandbox is claimed by exactly one replica", async () => {
      const id = await runningSandbox(5);
      const later = await runningSandbox(-3600);
      assert.deepEqual(await due(), [id]);
      const [first, second] = await Promise.all([
        claimExpiry(t.db, id, 20_000),
        claimExpiry(t.db, id, 20_000),
      ]);
      assert.equal([first, second].filter(Boolean).length, 1, "one claim wins");
      assert.equal(await claimExpiry(t.db, id, 20_000), undefined);
      assert.deepEqual(await due(), [], "a claimed sandbox is nobody else's work");
      assert.equal(await claimExpiry(t.db, later, 20_000), undefined, "not due yet");
      // Renewing keeps it; ending the claim with a retry delay hands it back after the delay.
      await renewExpiry(t.db, id, 20_000);
      assert.deepEqual(await due(), []);
      await releaseExpiry(t.db, id, 300);
      assert.deepEqual(await due(), []);
      await sleep(400);
      assert.deepEqual(await due(), [id]);
      assert.ok(await claimExpiry(t.db, id, 20_000));
      await releaseExpiry(t.db, id, 0);
      assert.deepEqual(await due(), [id], "released at once");
    });

    it("a claim whose replica died lapses; a sandbox that changed is not claimed", async () => {
      const id = await runningSandbox(5);
      assert.ok(await claimExpiry(t.db, id, 200));
      assert.equal(await claimExpiry(t.db, id, 20_000), undefined);
      await sleep(300);
      assert.ok(await claimExpiry(t.db, id, 20_000), "the lapsed claim is taken over");
      await releaseExpiry(t.db, id, 0);
      await transitionSandbox(t.db, id, ["running"], "paused");
      assert.equal(await claimExpiry(t.db, id, 20_000), undefined, "paused meanwhile");
      assert.deepEqual(await due(), []);
    });

    it("housekeeping prunes what nobody can see, on one replica at a time", async () => {
      const sandbox = await runningSandbox(-3600);
      const userId = "usr_housekeeping1";
      await insertUser(t.db, {
        id: userId,
        email: "hk@example.com",
        password_hash: "x",
        name: "HK",
      });
      for (const [id, revokedDaysAgo] of [
        ["sess_old", 2],
        ["sess_recent", 0.5],
        ["sess_live", null],
      ] as const) {
        await insertUserSession(t.db, {
          id,
          user_id: userId,
          team_id: teamId,
          expires_at: new Date(Date.now() + 86_400_000),
        });
        if (revokedDaysAgo !== null)
          await t.db.query(
            "UPDATE user_sessions SET revoked_at = now() - make_interval(hours => $2::integer) WHERE id = $1",
            [id, revokedDaysAgo * 24],
          );
      }
      await t.db.query(
        `INSERT INTO sandbox_running_periods (sandbox_id, team_id, vcpus, memory_mb, started_at, ended_at)
         VALUES ('sbx_old', $1, 1, 256, now() - interval '30 hours', now() - interval '26 hours'),
                ('sbx_new', $1, 1, 256, now() - interval '3 hours', now() - interval '2 hours')`,
        [teamId],
      );
      const now = Math.floor(Date.now() / 1000);
      const point = (tsUnix: number) => ({ tsUnix, cpuPct: 1, memBytes: 1, diskBytes: 1 });
      await insertMetricPoints(t.db, sandbox, "24h", [point(now - 31 * 86_400), point(now - 3600)]);

      const hk = new Housekeeping(t.db, () => {});
      // Another replica runs it right now: this one does nothing.
      const held = await t.db.tryWithAdvisoryLock(0x6e62_0003, () => hk.runOnce());
      assert.ok(held.ran);
      assert.equal(held.value, undefined);

      assert.deepEqual(await hk.runOnce(), { sessions: 1, runningPeriods: 1, metricPoints: 1 });
      const sessions = await t.db.query<{ id: string }>("SELECT id FROM user_sessions ORDER BY id");
      assert.deepEqual(
        sessions.map((s) => s.id),
        ["sess_live", "sess_recent"],
      );
      const periods = await t.db.query<{ sandbox_id: string }>(
        "SELECT sandbox_id FROM sandbox_running_periods WHERE sandbox_id LIKE 'sbx_%'",
      );
      assert.deepEqual(
        periods.map((p) => p.sandbox_id),
        ["sbx_new"],
      );
      const points = await t.db.query("SELECT 1 FROM sandbox_metric_points WHERE sandbox_id = $1", [
        sandbox,
      ]);
      assert.equal(points.length, 1);
      assert.deepEqual(await hk.runOnce(), { sessions: 0, runningPeriods: 0, metricPoints: 0 });
    });
  });
}
