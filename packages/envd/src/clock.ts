import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

interface ClockAddon {
  setTime(epochMs: number): void;
}

/** The addon sits next to the bundle in the guest, or in the package's build tree in development. */
function loadAddon(): ClockAddon {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.join(here, "native", "clock.node"),
    path.join(here, "..", "native", "clock", "build", "Release", "clock.node"),
  ];
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error(`clock addon not found (looked in ${candidates.join(", ")})`);
  return createRequire(import.meta.url)(found) as ClockAddon;
}

let addon: ClockAddon | undefined;

/**
 * Sets the system clock when it is more than `toleranceMs` away from `epochMs`. Needs root; used
 * only inside a VM (`--sync-clock`), never on a shared host kernel.
 */
export function syncClock(
  epochMs: number,
  toleranceMs = 500,
): { changed: boolean; driftMs: number } {
  const driftMs = Date.now() - epochMs;
  if (Math.abs(driftMs) <= toleranceMs) return { changed: false, driftMs };
  addon ??= loadAddon();
  addon.setTime(epochMs);
  return { changed: true, driftMs };
}
