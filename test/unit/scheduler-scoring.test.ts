/**
 * The scheduler's scoring (src/hosts/scoring.ts): least-loaded, bottleneck-first, with the
 * reserve, paused sandboxes at half their memory and two thirds of their disk, CPU scored but
 * never refused. No database (placement rules with hosts and teams: test/server/scheduler.test.ts).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DEFAULT_RESERVE,
  rankScored,
  reserveFromPercent,
  type ScoredHostInput,
  scoreHost,
} from "../../packages/server/src/hosts/scoring.js";

const NO_RESERVE = reserveFromPercent(0);

const host = (id: string, o: Partial<ScoredHostInput> = {}): ScoredHostInput => ({
  id,
  memory_mb: 8192,
  disk_mb: 100_000,
  cpu_cores: 8,
  live_memory_mb: 0,
  paused_memory_mb: 0,
  live_disk_mb: 0,
  paused_disk_mb: 0,
  live_vcpus: 0,
  ...o,
});
const need = { vcpus: 1, memoryMb: 512, diskMb: 5120 };
const ids = (hosts: ScoredHostInput[], n = need, reserve = NO_RESERVE) =>
  rankScored(hosts, n, reserve).ranked.map((s) => s.id);

describe("scheduler scoring", () => {
  it("puts the least loaded host first", () => {
    const hosts = [
      host("half", { live_memory_mb: 4096 }),
      host("empty"),
      host("quarter", { live_memory_mb: 6144 }),
    ];
    assert.deepEqual(ids(hosts), ["empty", "half", "quarter"]);
  });

  it("ranks each host by its scarcest resource: memory, disk or CPU", () => {
    // a: memory 75 % free but disk 10 % free; b: half of both.
    const byDisk = [
      host("a", { live_memory_mb: 2048, live_disk_mb: 90_000 }),
      host("b", { live_memory_mb: 4096, live_disk_mb: 50_000 }),
    ];
    assert.deepEqual(ids(byDisk), ["b", "a"]);
    // c: plenty of memory and disk, but its 2 cores (3 vCPUs offered) are taken.
    const byCpu = [
      host("c", { cpu_cores: 2, live_vcpus: 3 }),
      host("d", { live_memory_mb: 4096, live_disk_mb: 50_000 }),
    ];
    assert.deepEqual(ids(byCpu), ["d", "c"]);
  });

  it("admits by memory and disk only: CPU may be overcommitted", () => {
    const hosts = [
      host("no-memory", { live_memory_mb: 7800 }),
      host("no-disk", { live_disk_mb: 96_000 }),
      host("fits", { live_memory_mb: 7680, live_disk_mb: 94_880 }),
      host("cpu-full", { cpu_cores: 1, live_vcpus: 40 }),
    ];
    assert.deepEqual(ids(hosts).sort(), ["cpu-full", "fits"]);
    const s = scoreHost(hosts[3] as ScoredHostInput, need, NO_RESERVE);
    assert.ok(s.fits && s.score < 0, "an overcommitted host fits but scores below zero");
  });

  it("counts paused sandboxes at half their memory and two thirds of their disk", () => {
    // 8192 MiB host: 7 GiB paused counts as 3.5 GiB, so 4.5 GiB are free.
    const paused = host("p", { paused_memory_mb: 7168, paused_disk_mb: 30_000 });
    const s = scoreHost(paused, need, NO_RESERVE);
    assert.equal(s.freeMemoryMb, 8192 - 3584);
    assert.equal(s.freeDiskMb, 100_000 - 20_000);
    const running = scoreHost(host("r", { live_memory_mb: 7168 }), need, NO_RESERVE);
    assert.equal(running.freeMemoryMb, 1024);
    assert.ok(s.score > running.score);
  });

  it("keeps a proportional reserve, capped at the seed's figures", () => {
    // A 24 GiB host keeps 10 % (2.4 GiB), not the seed's fixed 8 GiB.
    const small = scoreHost(host("small", { memory_mb: 24_576 }), need, DEFAULT_RESERVE);
    assert.equal(Math.round(small.freeMemoryMb), 24_576 - 2458);
    // A 256 GiB host keeps at most 8 GiB; disk at most 30 GiB.
    const big = scoreHost(
      host("big", { memory_mb: 262_144, disk_mb: 2_000_000 }),
      need,
      DEFAULT_RESERVE,
    );
    assert.equal(big.freeMemoryMb, 262_144 - 8192);
    assert.equal(big.freeDiskMb, 2_000_000 - 30_720);
    // The reserve decides admission: 7.5 GiB used of 8 GiB fits only without it.
    const tight = host("tight", { live_memory_mb: 7680 - 512 });
    assert.deepEqual(ids([tight], need, NO_RESERVE), ["tight"]);
    assert.deepEqual(ids([tight], need, DEFAULT_RESERVE), []);
    assert.throws(() => reserveFromPercent(60), RangeError);
  });

  it("treats an unknown capacity as unlimited", () => {
    const hosts = [
      host("known", { live_memory_mb: 1024 }),
      host("unknown", { memory_mb: null, disk_mb: null, cpu_cores: null }),
    ];
    assert.deepEqual(ids(hosts, { vcpus: 1, memoryMb: 1 << 20, diskMb: 1 }), ["unknown"]);
    assert.deepEqual(ids(hosts), ["unknown", "known"]);
  });

  it("returns nothing for no hosts, and reports every host's score", () => {
    assert.deepEqual(rankScored([], need).ranked, []);
    const r = rankScored([host("a", { live_memory_mb: 8000 }), host("b")], need, NO_RESERVE);
    assert.deepEqual(
      r.all.map((s) => [s.id, s.fits]),
      [
        ["a", false],
        ["b", true],
      ],
    );
  });
});
