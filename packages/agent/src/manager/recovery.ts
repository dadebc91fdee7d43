import { execFile } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { HOST_VETH_PREFIX } from "../network/host-firewall.js";
import type { SandboxTable } from "./sandboxes.js";

const exec = promisify(execFile);

/**
 * After a restart: keep sandboxes the runtime can adopt, remove the others (and half-created
 * or half-destroyed ones, and warm pool entries, which are never `running`), then remove
 * namespaces, veths and directories nobody owns.
 */
export async function recoverSandboxes(table: SandboxTable): Promise<void> {
  const { records, broken } = table.store.loadAll();
  for (const id of broken) {
    table.log.warn("unreadable sandbox record, removing its leftovers", { sandboxId: id });
    table.store.remove(id);
  }
  for (const rec of records) {
    table.records.set(rec.id, rec);
    const spec = table.spec(rec);
    let keep = false;
    if ((rec.status === "running" || rec.status === "paused") && rec.runtime) {
      keep =
        (await table.runtime.adopt(spec, rec.runtime).catch(() => false)) &&
        (await namespaceExists(spec.network.namespace));
    }
    if (keep) {
      rec.lastActiveAtMs = Date.now();
      table.log.info("sandbox re-adopted", { sandboxId: rec.id, status: rec.status });
    } else {
      table.log.warn("sandbox could not be re-adopted, cleaning up", {
        sandboxId: rec.id,
        status: rec.status,
      });
      await table.teardown(rec);
    }
  }
  await removeOrphans(table);
}

/** Namespaces, veths and sandbox directories of this instance that no record owns. */
async function removeOrphans(table: SandboxTable): Promise<void> {
  const live = [...table.records.values()];
  const known = new Set(live.map((r) => r.resourceId ?? r.id));
  const namespaces = new Set(live.map((r) => r.network.namespace));
  const veths = new Set(live.map((r) => r.network.hostVeth));
  const ownNamespace = new RegExp(`^${HOST_VETH_PREFIX}${table.instance}-[a-z0-9]{20}$`);
  // Only names this agent would generate: prefix, instance letter, 11 id characters.
  const ownVeth = new RegExp(`^${HOST_VETH_PREFIX}${table.instance}[a-z0-9]{11}$`);
  const { stdout: nsList } = await exec("ip", ["netns", "list"]);
  for (const line of nsList.split("\n")) {
    const ns = line.split(" ")[0] ?? "";
    if (!ownNamespace.test(ns) || namespaces.has(ns)) continue;
    table.log.warn("removing orphaned network namespace", { namespace: ns });
    await killNamespacePids(ns);
    await exec("ip", ["netns", "delete", ns]).catch((e: unknown) => table.warn(ns, "netns", e));
  }
  const { stdout: links } = await exec("ip", ["-o", "link", "show"]);
  for (const line of links.split("\n")) {
    const name = /^\d+:\s+([^:@]+)/.exec(line)?.[1] ?? "";
    if (!ownVeth.test(name) || veths.has(name)) continue;
    table.log.warn("removing orphaned veth", { link: name });
    await exec("ip", ["link", "delete", name]).catch((e: unknown) => table.warn(name, "link", e));
  }
  for (const name of readdirSync(table.sandboxesDir)) {
    if (known.has(name)) continue;
    table.log.warn("removing orphaned sandbox directory", { dir: name });
    const dir = path.join(table.sandboxesDir, name);
    await unmountBelow(dir);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function namespaceExists(ns: string): Promise<boolean> {
  const { stdout } = await exec("ip", ["netns", "list"]);
  return stdout.split("\n").some((l) => l.split(" ")[0] === ns);
}

async function killNamespacePids(ns: string): Promise<void> {
  try {
    const { stdout } = await exec("ip", ["netns", "pids", ns]);
    for (const pid of stdout.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch (err) {
        // Exited meanwhile.
        void err;
      }
    }
  } catch (err) {
    // The namespace vanished meanwhile.
    void err;
  }
}

/** Mount points at or below `dir` in a `/proc/<pid>/mounts` text, deepest first. */
export function mountsBelow(mounts: string, dir: string): string[] {
  return mounts
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .map((m) => m.replace(/\\040/g, " "))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Lazily unmounts every mount at or below `dir` (deepest first) so it can be removed. */
async function unmountBelow(dir: string): Promise<void> {
  for (const m of mountsBelow(readFileSync("/proc/self/mounts", "utf8"), dir)) {
    await exec("umount", ["-l", m]).catch((e: unknown) => {
      // Already gone, or busy beyond a lazy unmount: the removal below reports what is left.
      void e;
    });
  }
}
