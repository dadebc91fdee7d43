// Internal: the per-sandbox overlayfs. lower = the template's root directory (shared, never
// written), upper + work = the sandbox's own changes, in its state directory; merged = what the
// sandbox sees as `/`. The mount lives in the host's mount namespace on purpose: it must outlive
// the agent (re-adoption), and snapshots and disk usage read it from the host.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { RuntimeError } from "../runtime.js";
import { unescapeMount } from "./cgroup.js";
import { CommandError, runCommand } from "./command.js";

export interface OverlayPaths {
  lower: string;
  upper: string;
  work: string;
  merged: string;
}

export function overlayPaths(sandboxDir: string, lower: string): OverlayPaths {
  return {
    lower,
    upper: join(sandboxDir, "upper"),
    work: join(sandboxDir, "work"),
    merged: join(sandboxDir, "rootfs"),
  };
}

// overlayfs splits its options at "," and lower layers at ":"; mount(8) would misparse others.
const SAFE_PATH = /^\/[A-Za-z0-9._/@+-]*$/;

function checkPath(path: string): void {
  if (!SAFE_PATH.test(path)) {
    throw new RuntimeError("invalid_argument", `path unusable in overlay options: ${path}`);
  }
}

/** Mounts the overlay (directories must exist). `tag` names the mount in /proc/mounts. */
export async function mountOverlay(paths: OverlayPaths, tag: string): Promise<void> {
  for (const p of [paths.lower, paths.upper, paths.work, paths.merged]) checkPath(p);
  await runCommand(
    [
      "mount",
      "-t",
      "overlay",
      tag,
      "-o",
      `lowerdir=${paths.lower},upperdir=${paths.upper},workdir=${paths.work}`,
      paths.merged,
    ],
    { timeoutMs: 30_000 },
  );
}

interface MountEntry {
  source: string;
  target: string;
  type: string;
  options: string;
}

export async function readMounts(): Promise<MountEntry[]> {
  const text = await readFile("/proc/self/mounts", "utf8");
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const [source, target, type, options] = line.split(" ");
    if (!source || !target || !type || options === undefined) continue;
    entries.push({ source, target: unescapeMount(target), type, options });
  }
  return entries;
}

export async function isMounted(target: string): Promise<boolean> {
  return (await readMounts()).some((m) => m.target === target);
}

/** Mount points of overlays that use `lower` as a lower layer (sandboxes on a template). */
export async function overlaysUsing(lower: string): Promise<string[]> {
  return (await readMounts())
    .filter(
      (m) =>
        m.type === "overlay" &&
        m.options
          .split(",")
          .some((o) => o.startsWith("lowerdir=") && o.slice(9).split(":").includes(lower)),
    )
    .map((m) => m.target);
}

/**
 * Unmounts `target` (and anything stacked on it). A busy mount is detached lazily: the sandbox's
 * processes are gone by then, so "busy" can only be a host process looking in, and detaching
 * removes it from the tree at once while the kernel frees it when that process lets go.
 * Not mounted is not an error.
 */
export async function unmountOverlay(target: string): Promise<void> {
  // A loop, because mounts can be stacked on the same target (one umount removes the top one).
  for (let i = 0; i < 16 && (await isMounted(target)); i++) {
    try {
      await runCommand(["umount", target], { timeoutMs: 30_000 });
    } catch (error) {
      if (!(error instanceof CommandError)) throw error;
      if (!(await isMounted(target))) return;
      await runCommand(["umount", "-l", target], { timeoutMs: 30_000 });
    }
  }
  if (await isMounted(target)) {
    throw new RuntimeError("internal", `cannot unmount ${target}`);
  }
}
