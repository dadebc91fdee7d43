import { timingSafeEqual } from "node:crypto";

/**
 * Mutable envd configuration, set at start and by `POST /init` (the host agent calls it after
 * every create and restore). One instance per envd process.
 */
export class EnvdState {
  accessToken: string | undefined;
  defaultUser: string;
  defaultWorkdir: string | undefined;
  /** Environment every new process inherits, before its own request envs. */
  envVars: Record<string, string> = {};
  /** Unix milliseconds of the newest /init applied; older /init calls change nothing. */
  lastInitAt: number | undefined;
  /** Set the system clock from /init timestamps (inside a VM only: `--sync-clock`). */
  syncClock = false;

  constructor(opts: { defaultUser: string; accessToken?: string; defaultWorkdir?: string }) {
    this.defaultUser = opts.defaultUser;
    this.accessToken = opts.accessToken;
    this.defaultWorkdir = opts.defaultWorkdir;
  }

  /** Constant-time comparison against the installed token; true when none is installed. */
  tokenMatches(candidate: string | null | undefined): boolean {
    if (this.accessToken === undefined) return true;
    if (candidate === null || candidate === undefined) return false;
    return constantTimeEqual(candidate, this.accessToken);
  }
}

export function constantTimeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  if (ab.length !== bb.length) return false;
  return timingSafeEqual(ab, bb);
}
