// Unit tests of the namespace runtime's pure pieces (no root needed):
//   node --import tsx --test test/agent/namespace-units.test.ts
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_TOOLS, launchArgv } from "../../packages/agent/src/runtime/namespace/bwrap.js";
import {
  findHierarchies,
  limitsFor,
  SandboxCgroup,
  unescapeMount,
} from "../../packages/agent/src/runtime/namespace/cgroup.js";
import { overlayPaths } from "../../packages/agent/src/runtime/namespace/overlay.js";

const HYBRID_MOUNTS = [
  "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0",
  "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0",
  "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0",
  "cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0",
  "cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0",
].join("\n");

describe("namespace runtime: cgroups", () => {
  it("finds v1 hierarchies, co-mounted controllers sharing one", () => {
    const h = findHierarchies(HYBRID_MOUNTS);
    assert.equal(h.cpu, "/sys/fs/cgroup/cpu,cpuacct");
    assert.equal(h.cpuacct, "/sys/fs/cgroup/cpu,cpuacct");
    const cg = new SandboxCgroup(h, "nestbox-ns/abc");
    assert.equal(cg.dirs().length, 4);
    assert.ok(cg.procsFiles().includes("/sys/fs/cgroup/memory/nestbox-ns/abc/cgroup.procs"));
  });

  it("refuses a host without the controllers it needs", () => {
    assert.throws(() => findHierarchies("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0"), {
      code: "failed_precondition",
    });
  });

  it("derives limits from the spec", () => {
    assert.deepEqual(limitsFor(2, 512, 100), {
      memoryBytes: 512 * 1024 * 1024,
      pidsMax: 100,
      cpuShares: 2048,
      cpuQuotaUs: 200_000,
    });
  });

  it("unescapes /proc/mounts fields", () => {
    assert.equal(unescapeMount("/a\\040b"), "/a b");
  });
});

describe("namespace runtime: launch argv", () => {
  const paths = overlayPaths("/var/lib/nestbox/sandboxes/x", "/t/root");
  const argv = launchArgv({
    tools: DEFAULT_TOOLS,
    netnsPath: "/run/netns/nbx-x",
    cgroupProcsFiles: ["/cg/memory/p/x/cgroup.procs", "/cg/pids/p/x/cgroup.procs"],
    rootfs: paths.merged,
    hostname: "nestbox",
  });

  it("joins the cgroups before anything else runs, then the netns, then bwrap", () => {
    assert.equal(argv[0], "/bin/sh");
    const sep = argv.indexOf("--");
    assert.deepEqual(argv.slice(4, sep), [
      "/cg/memory/p/x/cgroup.procs",
      "/cg/pids/p/x/cgroup.procs",
    ]);
    assert.deepEqual(argv.slice(sep + 1, sep + 4), [
      "/usr/bin/nsenter",
      "--net=/run/netns/nbx-x",
      "--",
    ]);
    assert.equal(argv[sep + 4], "/usr/bin/bwrap");
  });

  it("keeps the given network namespace and outlives its parent", () => {
    assert.ok(!argv.includes("--unshare-net"));
    assert.ok(!argv.includes("--unshare-all"));
    assert.ok(!argv.includes("--die-with-parent"));
    const bind = argv.indexOf("--bind");
    assert.deepEqual(argv.slice(bind, bind + 3), ["--bind", paths.merged, "/"]);
  });

  it("gives root no mount or network administration", () => {
    assert.ok(argv.includes("--cap-drop"));
    assert.ok(!argv.includes("CAP_SYS_ADMIN"));
    assert.ok(!argv.includes("CAP_NET_ADMIN"));
    assert.ok(argv.includes("CAP_SETUID"));
  });
});
