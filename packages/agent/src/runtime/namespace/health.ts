// Internal: waiting for envd, and recognising our own processes after an agent restart.

import { readFile } from "node:fs/promises";
import { request } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { RuntimeError } from "../runtime.js";
import { isGone } from "./command.js";

/** One GET /health; true on 2xx. Never throws. */
export function probeHealth(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    // agent: false: a kept-alive socket from an earlier probe could outlive a pause.
    const req = request(url, { method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end();
  });
}

export interface WaitOptions {
  deadlineMs: number;
  /** Checked between attempts: a reason to give up early (e.g. the sandbox process exited). */
  failed?: () => string | null;
}

/**
 * Polls until envd answers. A refused connection comes back in well under a millisecond
 * through the veth, so a short interval costs little and keeps start latency down; the
 * interval grows after the first 100 ms so a slow start does not burn a core.
 */
export async function waitForHealth(url: string, opts: WaitOptions): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await probeHealth(url, 1_000)) return Date.now() - started;
    const reason = opts.failed?.();
    if (reason) throw new RuntimeError("internal", `envd did not start: ${reason}`);
    const elapsed = Date.now() - started;
    if (elapsed > opts.deadlineMs) {
      throw new RuntimeError(
        "unavailable",
        `envd did not answer ${url} within ${opts.deadlineMs} ms`,
      );
    }
    await sleep(elapsed < 100 ? 2 : 20);
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or null if gone. */
export async function pidStartTime(pid: number): Promise<number | null> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch (error) {
    if (isGone(error)) return null;
    throw error;
  }
  // The command name (field 2) may contain spaces and parentheses: split after the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state), so field 22 is fields[19].
  const value = fields[19];
  if (fields[0] === "Z" || value === undefined) return null;
  return Number(value);
}
