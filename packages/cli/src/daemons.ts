import { existsSync } from "node:fs";
import path from "node:path";
import { UsageError } from "@nestbox/sdk/cli";
import { runChild } from "./run-child.js";

/**
 * Starting the daemons of the other packages. Each is imported only when its command runs, so
 * `nestbox sandbox …` never loads the control plane, the host agent or envd.
 */

interface DaemonEntry {
  main(argv: string[]): Promise<void>;
}

export async function runEnvd(args: string[]): Promise<number> {
  const envd = (await import("@nestbox/envd")) as DaemonEntry;
  await envd.main(args);
  return 0;
}

export async function runAgent(args: string[]): Promise<number> {
  const agent = (await import("@nestbox/agent/main")) as DaemonEntry;
  await agent.main(args);
  return 0;
}

export async function runServer(args: string[]): Promise<number> {
  const server = (await import("@nestbox/server/main")) as DaemonEntry;
  await server.main(args);
  return 0;
}

export async function runMigrate(args: string[]): Promise<number> {
  const m = (await import("@nestbox/server/db/cli-migrate")) as {
    runMigrate(argv: string[]): Promise<number>;
  };
  return m.runMigrate(args);
}

/** `nestbox image build`: images/build.sh of this checkout, with a fresh envd bundle. */
export async function runImageBuild(repoRoot: string, args: string[]): Promise<number> {
  const script = path.join(repoRoot, "images/build.sh");
  if (!existsSync(script)) throw new UsageError("images/build.sh is missing from this checkout");
  // Re-bundle envd first (well under a second) so the image never carries a stale envd.
  const bundled = await runChild(process.execPath, [
    path.join(repoRoot, "packages/envd/scripts/bundle.mjs"),
  ]);
  if (bundled !== 0) return bundled;
  return runChild("bash", [script, ...args]);
}
