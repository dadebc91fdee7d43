// Boot acceptance test for the guest image built by images/build.sh: boots `base` under QEMU
// microvm in a throwaway network namespace, waits for envd's /health from the host side, then
// runs a command through the real E2B SDK.
//
//   node --import tsx --test test/image/boot.test.ts      (as root, after images/build.sh)
//
// Needs root (netns, TAP). Fails, rather than skips, when the image is missing: CI builds it
// first, and a silently skipped boot test would hide a broken build.
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Sandbox } from "e2b";
import {
  createSandboxNetwork,
  destroySandboxNetwork,
  ENVD_PORT,
  netnsExec,
  type SandboxNetwork,
} from "../../packages/agent/src/network/netns.js";
import { buildMicrovmArgv, guestKernelCmdline } from "../../packages/agent/src/qemu/cmdline.js";
import { type GuestImage, loadGuestImage } from "../../packages/agent/src/qemu/image.js";

// TCG boots in ~5-10 s on an idle 2-core machine; a loaded CI machine can be several times slower.
const BOOT_DEADLINE_MS = 120_000;
const TEST_TIMEOUT_MS = 240_000;

const suffix = randomBytes(3).toString("hex");
// 10.250.<n>.0/30 is slot n*64 of the agent's 10.250.0.0/16 plan; pick an n no interface uses.
const octet = pickFreeOctet();
const namespace = `nbx-test-${suffix}`;
const hostVeth = `nbxt${suffix}`;

let image: GuestImage;
let workDir: string | undefined;
let network: SandboxNetwork | undefined;
let qemu: ChildProcess | undefined;
let consoleLog = "";

function pickFreeOctet(): number {
  const addrs = execFileSync("ip", ["-4", "-o", "addr", "show"], { encoding: "utf8" });
  for (let attempt = 0; attempt < 50; attempt++) {
    const n = randomInt(1, 255);
    if (!addrs.includes(`10.250.${n}.`)) return n;
  }
  throw new Error("no free 10.250.<n>.0/30 block");
}

function consoleTail(lines = 40): string {
  if (!existsSync(consoleLog)) return "(no console log)";
  return readFileSync(consoleLog, "utf8").split("\n").slice(-lines).join("\n");
}

async function stopQemu(): Promise<void> {
  const child = qemu;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

function requireCommand(command: string, pkg: string): void {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
  } catch {
    throw new Error(`${command} not found: install the ${pkg} package (see images/deps.txt)`);
  }
}

before(async () => {
  requireCommand("qemu-system-x86_64", "qemu-system-x86");
  requireCommand("qemu-img", "qemu-utils");
  requireCommand("nft", "nftables");
  assert.equal(process.getuid?.(), 0, "the boot test needs root (network namespaces, TAP)");
  image = await loadGuestImage("base");
  workDir = mkdtempSync(join(tmpdir(), "nbx-boot-test-"));
  consoleLog = join(workDir, "console.log");
  const overlay = join(workDir, "rootfs.qcow2");
  // The base image is shared and must never change: the guest writes to a qcow2 overlay.
  execFileSync("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    image.rootfsPath,
    "-F",
    "raw",
    overlay,
  ]);
  network = await createSandboxNetwork({ namespace, slot: octet * 64, hostVeth });

  const argv = buildMicrovmArgv({
    kernel: image.kernelPath,
    initrd: image.initrdPath,
    cmdline: guestKernelCmdline({ image: image.manifest.cmdline }),
    rootfs: { path: overlay, format: "qcow2" },
    acpi: image.manifest.acpi,
    tap: { ifname: network.tap },
    memoryMiB: 1024,
    vcpus: 2,
    accel: "tcg",
    qmpSocket: join(workDir, "qmp.sock"),
    serialLog: consoleLog,
    name: `nestbox-boot-test-${suffix}`,
  });
  const [file, ...args] = netnsExec(namespace, argv);
  assert.ok(file);
  qemu = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"] });
  qemu.stderr?.setEncoding("utf8");
  qemu.stderr?.on("data", (chunk: string) => process.stderr.write(`qemu: ${chunk}`));
});

after(async () => {
  // Each step runs even if an earlier one fails: nothing may outlive the test.
  const problems: unknown[] = [];
  await stopQemu().catch((error: unknown) => problems.push(error));
  // Idempotent, and also covers a half-created network (createSandboxNetwork rolls back, but
  // not if the process was interrupted mid-way).
  await destroySandboxNetwork({ namespace, hostVeth }).catch((error: unknown) =>
    problems.push(error),
  );
  if (workDir) {
    try {
      rmSync(workDir, { recursive: true, force: true });
    } catch (error) {
      problems.push(error);
    }
  }
  if (problems.length > 0) {
    throw new AggregateError(problems, "boot test cleanup failed");
  }
});

async function waitForHealth(url: string): Promise<number> {
  const started = Date.now();
  let lastError = "";
  while (Date.now() - started < BOOT_DEADLINE_MS) {
    if (qemu && (qemu.exitCode !== null || qemu.signalCode !== null)) {
      assert.fail(
        `QEMU exited (${qemu.exitCode ?? qemu.signalCode}) before envd answered.\n${consoleTail()}`,
      );
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (res.status === 204) return Date.now() - started;
      lastError = `HTTP ${res.status}`;
    } catch (error) {
      lastError = (error as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.fail(
    `envd did not answer ${url} within ${BOOT_DEADLINE_MS} ms (last: ${lastError}).\n${consoleTail()}`,
  );
}

test("base image boots and envd serves the E2B SDK", { timeout: TEST_TIMEOUT_MS }, async (t) => {
  assert.ok(network, "network was not set up");
  const envdUrl = `http://${network.sandboxAddress}:${ENVD_PORT}`;

  const bootMs = await waitForHealth(`${envdUrl}/health`);
  t.diagnostic(`envd /health 204 after ${bootMs} ms (${image.manifest.kernelKind} kernel, TCG)`);

  // debug mode + sandboxUrl: the SDK talks straight to this envd, with no control-plane API.
  const sandbox = await Sandbox.connect("nbxboottest000000000", {
    sandboxUrl: envdUrl,
    apiKey: `e2b_${randomBytes(20).toString("hex")}`,
    debug: true,
    requestTimeoutMs: 60_000,
  });
  const started = Date.now();
  const result = await sandbox.commands.run("id -un", { timeoutMs: 60_000 });
  t.diagnostic(`commands.run('id -un') took ${Date.now() - started} ms`);
  assert.equal(result.exitCode, 0, `stderr: ${result.stderr}`);
  assert.equal(result.stdout.trim(), "user");

  // The base template's promises: passwordless sudo, the listed tools on PATH, the fixed address.
  const checks = await sandbox.commands.run(
    "sudo -n id -un && command -v bash python3 git curl node ip && ip -4 -o addr show dev eth0",
    { timeoutMs: 60_000 },
  );
  assert.equal(checks.exitCode, 0, `stderr: ${checks.stderr}`);
  const lines = checks.stdout.trim().split("\n");
  assert.equal(lines[0], "root");
  assert.equal(lines.length, 8, checks.stdout);
  assert.match(checks.stdout, /inet 169\.254\.0\.21\/30/);

  // envd's other halves work in the guest too: files (native xattr addon) and watches (inotify).
  const seen: string[] = [];
  const watch = await sandbox.files.watchDir(
    "/home/user",
    (e) => void seen.push(`${e.type}:${e.name}`),
    {
      timeoutMs: 60_000,
    },
  );
  try {
    await sandbox.files.write("/home/user/hello.txt", "hi from the host", {
      metadata: { origin: "boot-test" },
    });
    const info = await sandbox.files.getInfo("/home/user/hello.txt");
    assert.equal(info.owner, "user");
    assert.deepEqual(info.metadata, { origin: "boot-test" });
    assert.equal(await sandbox.files.read("/home/user/hello.txt"), "hi from the host");
    const deadline = Date.now() + 30_000;
    while (!seen.includes("write:hello.txt") && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(seen.includes("write:hello.txt"), JSON.stringify(seen));
  } finally {
    await watch.stop();
  }
});
