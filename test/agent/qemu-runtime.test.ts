// The qemu runtime end to end, under TCG on this machine: base template, clones, pause/resume,
// snapshot and flatten to templates, stop, adopt — with the real E2B SDK talking to envd.
//
//   node --import tsx --test test/agent/qemu-runtime.test.ts     (as root, after ./nestbox image build)
//
// The base template is prepared once and cached in $NESTBOX_DIR/templates/base; templates this
// test creates are deleted in after().
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Sandbox } from "e2b";
import {
  createSandboxNetwork,
  destroySandboxNetwork,
  ENVD_PORT,
  type SandboxNetwork,
} from "../../packages/agent/src/network/netns.js";
import { probeBoot, resolveAccel } from "../../packages/agent/src/qemu/accel.js";
import { loadGuestImage } from "../../packages/agent/src/qemu/image.js";
import { QmpClient } from "../../packages/agent/src/qemu/qmp.js";
import { isProcessAlive } from "../../packages/agent/src/runtime/qemu/process.js";
import { QemuRuntime } from "../../packages/agent/src/runtime/qemu/runtime.js";
import {
  RuntimeError,
  type RuntimeState,
  type SandboxSpec,
} from "../../packages/agent/src/runtime/runtime.js";

const NESTBOX_DIR = process.env.NESTBOX_DIR ?? "/var/lib/nestbox";
const prefix = `nbxq-${randomBytes(3).toString("hex")}`;
const snapTemplate = `${prefix}-snap`;
const flatTemplate = `${prefix}-flat`;
const workDir = join(tmpdir(), `${prefix}-work`);

const runtime = new QemuRuntime({
  nestboxDir: NESTBOX_DIR,
  accel: "auto",
  log: {
    info: (msg, fields) => console.log(`# qemu: ${msg} ${JSON.stringify(fields ?? {})}`),
    warn: (msg, fields) => console.log(`# qemu WARN: ${msg} ${JSON.stringify(fields ?? {})}`),
    error: (msg, fields) => console.log(`# qemu ERROR: ${msg} ${JSON.stringify(fields ?? {})}`),
  },
});

interface Box {
  spec: SandboxSpec;
  state?: RuntimeState;
}
const boxes: Box[] = [];
const networks: SandboxNetwork[] = [];
const usedSlots = new Set<number>();

function freeSlot(): number {
  const addrs = execFileSync("ip", ["-4", "-o", "addr", "show"], { encoding: "utf8" });
  for (let attempt = 0; attempt < 100; attempt++) {
    const slot = randomInt(12_000, 13_000);
    const third = Math.floor((slot * 4) / 256);
    const fourth = (slot * 4) % 256;
    if (!usedSlots.has(slot) && !addrs.includes(`10.250.${third}.${fourth + 1}/`)) {
      usedSlots.add(slot);
      return slot;
    }
  }
  throw new Error("no free slot");
}

async function newBox(template: string, label: string): Promise<Box> {
  const n = boxes.length;
  const network = await createSandboxNetwork({
    namespace: `${prefix}-${n}`,
    slot: freeSlot(),
    hostVeth: `${prefix.replace("-", "")}${n}`.slice(0, 15),
  });
  networks.push(network);
  const dir = join(workDir, label);
  mkdirSync(dir, { recursive: true });
  const box: Box = {
    spec: {
      id: `${label}${"0".repeat(20)}`.slice(0, 20),
      template,
      vcpus: 2,
      memoryMb: 512,
      diskSizeMb: 0,
      dir,
      network,
    },
  };
  boxes.push(box);
  return box;
}

function networkGone(network: SandboxNetwork): boolean {
  const namespaces = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
  const links = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" });
  return (
    !namespaces.split("\n").some((line) => line.split(" ")[0] === network.namespace) &&
    !links.includes(`${network.hostVeth}@`) &&
    !links.includes(`${network.hostVeth}:`)
  );
}

async function connect(box: Box): Promise<Sandbox> {
  return Sandbox.connect(box.spec.id, {
    sandboxUrl: `http://${box.spec.network.sandboxAddress}:${ENVD_PORT}`,
    apiKey: `e2b_${randomBytes(20).toString("hex")}`,
    debug: true,
    requestTimeoutMs: 60_000,
  });
}

async function sh(sandbox: Sandbox, cmd: string): Promise<string> {
  const result = await sandbox.commands.run(cmd, { timeoutMs: 60_000 });
  assert.equal(result.exitCode, 0, `${cmd}: ${result.stderr}`);
  return result.stdout.trim();
}

/** Guest wall clock minus host wall clock, in ms (host time taken mid-request). */
async function clockSkewMs(sandbox: Sandbox): Promise<number> {
  const before = Date.now();
  const guest = Number(await sh(sandbox, "date +%s%3N"));
  const afterMs = Date.now();
  return guest - (before + afterMs) / 2;
}

// A background process whose state is visible: a counter it keeps incrementing in a file.
const COUNTER = "/tmp/nbx-counter";
const COUNTER_CMD = `sh -c 'i=0; while :; do i=$((i+1)); echo $i > ${COUNTER}; sleep 0.3; done' nbx-counter-loop`;

async function counterPid(sandbox: Sandbox): Promise<string> {
  return sh(sandbox, "pgrep -f nbx-counter-loop | head -n1");
}

async function counterAdvances(sandbox: Sandbox): Promise<void> {
  // The loop may not have written its first value yet: a missing file reads as 0.
  const read = async () => Number(await sh(sandbox, `cat ${COUNTER} 2>/dev/null || echo 0`));
  const first = await read();
  const deadline = Date.now() + 20_000;
  for (;;) {
    const now = await read();
    if (now > first) return;
    assert.ok(Date.now() < deadline, `counter stuck at ${now}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

const timings: Record<string, number> = {};
async function timed<T>(label: string, work: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await work();
  } finally {
    timings[label] = Date.now() - started;
    console.log(`# ${label}: ${timings[label]} ms`);
  }
}

before(async () => {
  assert.equal(process.getuid?.(), 0, "needs root (network namespaces, TAP)");
  mkdirSync(workDir, { recursive: true });
  await timed("prepareTemplate(base)", () => runtime.prepareTemplate("base"));
});

after(async () => {
  // Every step runs even if an earlier one fails: nothing may outlive the test.
  const problems: unknown[] = [];
  for (const box of boxes) {
    await runtime
      .stop(box.spec, box.state ?? { kind: "qemu", paused: false, details: {} })
      .catch((error: unknown) => problems.push(error));
  }
  for (const network of networks) {
    await destroySandboxNetwork(network).catch((error: unknown) => {
      // Deleting a namespace removes its veth pair asynchronously, so destroy can race with the
      // kernel over the host end; what matters is that both are gone afterwards.
      if (!networkGone(network)) problems.push(error);
    });
  }
  for (const template of [snapTemplate, flatTemplate]) {
    await runtime.deleteTemplate(template).catch((error: unknown) => problems.push(error));
  }
  rmSync(workDir, { recursive: true, force: true });
  console.log(`# cleanup done at ${new Date().toISOString()}`);
  console.log(`# timings ${JSON.stringify(timings)}`);
  for (const problem of problems) console.log(`# cleanup problem: ${String(problem)}`);
  if (problems.length > 0) throw new AggregateError(problems, "cleanup failed");
});

test("auto accelerator resolves to TCG here, fast", async () => {
  const decision = await resolveAccel("auto");
  assert.equal(decision.accel, "tcg");
  assert.ok(decision.ms < 2_000, `${decision.ms} ms`);
});

test("the KVM probe recognises a guest kernel that boots (exercised with TCG)", async () => {
  const image = await loadGuestImage("base", join(NESTBOX_DIR, "images"));
  const kernel = {
    kernelPath: image.kernelPath,
    initrdPath: image.initrdPath,
    acpi: image.manifest.acpi,
  };
  const ok = await timed("probe boot (tcg)", () => probeBoot("tcg", kernel, { timeoutMs: 30_000 }));
  assert.equal(ok.ok, true, ok.detail);
  // Too short a deadline is a failed probe, not a hang.
  const tooShort = await probeBoot("tcg", kernel, { timeoutMs: 100 });
  assert.equal(tooShort.ok, false);
});

let a: Box;
let b: Box;

test("two clones start concurrently, independent, with the host's clock", async () => {
  a = await newBox("base", "qa");
  b = await newBox("base", "qb");
  const [stateA, stateB] = await timed("start 2 clones concurrently", () =>
    Promise.all([runtime.start(a.spec), runtime.start(b.spec)]),
  );
  a.state = stateA;
  b.state = stateB;
  assert.equal(stateA.details.mode, "clone");
  assert.ok(stateA.pid && isProcessAlive(stateA.pid, stateA.pidStartTime));
  // One more, alone, for a clean clone-to-health figure.
  const c = await newBox("base", "qc");
  c.state = await timed("start 1 clone", () => runtime.start(c.spec));
  await timed("stop 1 clone", () => runtime.stop(c.spec, c.state as RuntimeState));

  const sa = await connect(a);
  const sb = await connect(b);
  assert.equal(await sh(sa, "id -un"), "user");
  await sh(sa, "echo only-in-a > /home/user/a.txt");
  assert.equal(await sh(sa, "cat /home/user/a.txt"), "only-in-a");
  assert.equal(await sh(sb, "test -e /home/user/a.txt && echo yes || echo no"), "no");
  await sh(sb, "echo only-in-b > /home/user/b.txt");
  assert.equal(await sh(sa, "test -e /home/user/b.txt && echo yes || echo no"), "no");

  for (const sandbox of [sa, sb]) {
    const skew = await clockSkewMs(sandbox);
    assert.ok(Math.abs(skew) < 3_000, `guest clock is ${skew} ms off the host's`);
  }
  const usage = await runtime.usage(a.spec, stateA);
  assert.ok(usage.memBytes > 0 && usage.diskBytes > 0, JSON.stringify(usage));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const usage2 = await runtime.usage(a.spec, stateA);
  assert.ok(usage2.cpuPct >= 0, JSON.stringify(usage2));
  console.log(`# usage of a clone: ${JSON.stringify(usage2)}`);
});

test("pause to disk and resume keep a running process and a file", async () => {
  const sa = await connect(a);
  const handle = await sa.commands.run(COUNTER_CMD, { background: true });
  // The process keeps running in the guest; only our stream to it is closed (it would keep the
  // test process alive after the sandbox is gone).
  await handle.disconnect();
  await counterAdvances(sa);
  const pid = await counterPid(sa);
  assert.match(pid, /^\d+$/);

  const paused = await timed("pause", () => runtime.pause(a.spec, a.state as RuntimeState));
  a.state = paused;
  assert.equal(paused.paused, true);
  assert.equal(paused.pid, undefined);
  assert.ok(existsSync(join(a.spec.dir, "pause.state")));
  assert.equal(await runtime.adopt(a.spec, paused), true, "a paused-to-disk sandbox is adoptable");

  const resumed = await timed("resume", () => runtime.resume(a.spec, paused));
  a.state = resumed;
  assert.equal(resumed.paused, false);
  assert.ok(!existsSync(join(a.spec.dir, "pause.state")));
  const again = await connect(a);
  assert.equal(await sh(again, "cat /home/user/a.txt"), "only-in-a");
  assert.equal(await counterPid(again), pid);
  await counterAdvances(again);
  const skew = await clockSkewMs(again);
  assert.ok(Math.abs(skew) < 3_000, `guest clock after resume is ${skew} ms off`);
});

test("snapshotToTemplate: a new sandbox has the file and the process; the source runs on", async () => {
  const { sizeBytes } = await timed("snapshotToTemplate (running)", () =>
    runtime.snapshotToTemplate(a.spec, a.state as RuntimeState, snapTemplate),
  );
  assert.ok(sizeBytes > 0);
  const templates = await runtime.listTemplates();
  const snap = templates.find((t) => t.name === snapTemplate);
  assert.ok(snap?.hasMemorySnapshot, JSON.stringify(templates));

  // The source sandbox continues.
  const sa = await connect(a);
  await counterAdvances(sa);

  const c = await newBox(snapTemplate, "qs");
  c.state = await timed("start from snapshot template", () => runtime.start(c.spec));
  assert.equal(c.state.details.mode, "clone");
  const sc = await connect(c);
  assert.equal(await sh(sc, "cat /home/user/a.txt"), "only-in-a");
  assert.match(await counterPid(sc), /^\d+$/);
  await counterAdvances(sc);
  const skew = await clockSkewMs(sc);
  assert.ok(Math.abs(skew) < 3_000, `guest clock is ${skew} ms off`);
  // Writes in the new sandbox do not reach the source.
  await sh(sc, "echo from-c > /home/user/c.txt");
  assert.equal(await sh(sa, "test -e /home/user/c.txt && echo yes || echo no"), "no");

  await assert.rejects(runtime.deleteTemplate("base"), /base of template/);
  await runtime.stop(c.spec, c.state);
});

test("flattenToTemplate: disk only; prepareTemplate snapshots it; clones have the file", async () => {
  const { sizeBytes } = await timed("flattenToTemplate (running)", () =>
    runtime.flattenToTemplate(b.spec, b.state as RuntimeState, flatTemplate),
  );
  assert.ok(sizeBytes > 0);
  let flat = (await runtime.listTemplates()).find((t) => t.name === flatTemplate);
  assert.equal(flat?.hasMemorySnapshot, false);
  // b keeps running after the flatten.
  assert.equal(await sh(await connect(b), "cat /home/user/b.txt"), "only-in-b");

  await timed("prepareTemplate(flattened)", () => runtime.prepareTemplate(flatTemplate));
  flat = (await runtime.listTemplates()).find((t) => t.name === flatTemplate);
  assert.equal(flat?.hasMemorySnapshot, true);
  const d = await newBox(flatTemplate, "qf");
  d.state = await timed("start from flattened template", () => runtime.start(d.spec));
  const sd = await connect(d);
  assert.equal(await sh(sd, "cat /home/user/b.txt"), "only-in-b");
  await runtime.stop(d.spec, d.state);
});

test("a disk_size_mb above the template's grows the guest's filesystem; below, the template's size stays", async () => {
  const rootMiB = async (s: Sandbox) => Number(await sh(s, "df -m --output=size / | tail -1"));
  const small = await newBox("base", "qs");
  small.spec = { ...small.spec, diskSizeMb: 1024 };
  small.state = await runtime.start(small.spec);
  const templateMiB = await rootMiB(await connect(small));
  assert.ok(templateMiB > 1024, `the template's ${templateMiB} MiB, not shrunk to 1024`);
  await runtime.stop(small.spec, small.state);

  const big = await newBox("base", "qg");
  big.spec = { ...big.spec, diskSizeMb: templateMiB + 2048 };
  big.state = await timed("start with a grown disk", () => runtime.start(big.spec));
  const sb = await connect(big);
  const sectors = Number(await sh(sb, "cat /sys/block/vda/size"));
  assert.equal(
    sectors * 512,
    big.spec.diskSizeMb * 1024 * 1024,
    "the guest's disk has the size asked for",
  );
  const grown = await rootMiB(sb);
  // ext4 keeps some of the new space for its own metadata.
  assert.ok(grown >= templateMiB + 1800, `root filesystem ${grown} MiB after growing`);
  // The space is really there: write past the template's free space would need it.
  await sh(sb, "fallocate -l 1G /var/tmp/big && rm /var/tmp/big");
  await runtime.stop(big.spec, big.state);
});

test("failed starts unwind and say why", async () => {
  const f = await newBox("base", "qx");
  await assert.rejects(
    runtime.start({ ...f.spec, template: "no-such-template" }),
    (error: unknown) => error instanceof RuntimeError && error.code === "not_found",
  );
  const broken = { ...f.spec, network: { ...f.spec.network, namespace: "nbxq-missing-ns" } };
  await assert.rejects(runtime.start(broken), (error: unknown) => {
    assert.ok(error instanceof RuntimeError);
    assert.match(error.message, /QEMU did not start[\s\S]*qemu log/);
    return true;
  });
  assert.deepEqual(readdirSync(f.spec.dir), []);
});

test("another machine size clones a size variant built once; adopt; SIGKILL; stop leaves nothing", async () => {
  const variantDir = join(NESTBOX_DIR, "templates", "base~1c384m");
  rmSync(variantDir, { recursive: true, force: true });
  const sized = async (label: string) => {
    const box = await newBox("base", label);
    box.spec = { ...box.spec, memoryMb: 384, vcpus: 1 };
    box.state = await timed(`start ${label} (384 MiB, 1 vCPU)`, () => runtime.start(box.spec));
    assert.equal(box.state.details.mode, "clone");
    const s = await connect(box);
    assert.equal(await sh(s, "nproc"), "1");
    const memKb = Number(await sh(s, "awk '/MemTotal/ {print $2}' /proc/meminfo"));
    assert.ok(memKb > 300_000 && memKb <= 384 * 1024, `MemTotal ${memKb} kB`);
    await runtime.stop(box.spec, box.state);
  };
  await sized("qe"); // builds the variant, then clones it
  const versions = readdirSync(variantDir).filter((n) => n.startsWith("v"));
  assert.equal(versions.length, 1);
  await sized("qv"); // clones the same variant
  assert.deepEqual(
    readdirSync(variantDir).filter((n) => n.startsWith("v")),
    versions,
    "the second sandbox of that size reuses the variant",
  );
  assert.ok(
    (timings["start qv (384 MiB, 1 vCPU)"] ?? 0) < (timings["start qe (384 MiB, 1 vCPU)"] ?? 0),
    "a clone of the variant starts faster than building it",
  );
  assert.ok(
    !(await runtime.listTemplates()).some((t) => t.name.includes("~")),
    "size variants are not listed as templates",
  );

  assert.equal(await runtime.adopt(b.spec, b.state as RuntimeState), true);
  // An agent that died between `stop` and `cont` left the VM stopped: adopt lets it run again.
  const qmp = await QmpClient.connect(join(b.spec.dir, "qmp.sock"));
  await qmp.execute("stop");
  qmp.close();
  assert.equal(await runtime.adopt(b.spec, b.state as RuntimeState), true);
  assert.equal(await sh(await connect(b), "echo alive"), "alive");
  const state = b.state as RuntimeState;
  assert.ok(state.pid);
  process.kill(state.pid, "SIGKILL");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(await runtime.adopt(b.spec, state), false);
  await runtime.stop(b.spec, state); // a dead VM: must not throw
  assert.deepEqual(readdirSync(b.spec.dir), []);

  const sa = a.state as RuntimeState;
  await timed("stop", () => runtime.stop(a.spec, sa));
  assert.ok(sa.pid && !isProcessAlive(sa.pid, sa.pidStartTime));
  assert.deepEqual(readdirSync(a.spec.dir), []);
  await runtime.stop(a.spec, sa); // idempotent
});
