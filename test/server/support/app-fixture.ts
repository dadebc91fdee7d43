/**
 * The pieces of an in-process HTTP app for route tests that never reach a sandbox: a database
 * of the given kind, a throwaway data directory and config, and a SandboxAccess that fails
 * the test if a route uses it.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { AppDeps } from "../../../packages/server/src/api/context.js";
import type { ServerConfig } from "../../../packages/server/src/config.js";
import { AgentClients } from "../../../packages/server/src/hosts/agent-clients.js";
import type { SandboxAccess } from "../../../packages/server/src/services/sandbox-access.js";
import { type DbKind, openTestDb, type TestDb } from "./db-fixture.js";

const unused = () => {
  throw new Error("these routes must not use SandboxAccess");
};
export const noSandboxes: SandboxAccess = { get: unused, running: unused, touch: unused };

export interface AppFixture {
  t: TestDb;
  deps: AppDeps;
  close(): Promise<void>;
}

export async function openAppFixture(
  kind: DbKind,
  publicUrl = "http://127.0.0.1:3000",
): Promise<AppFixture> {
  const t = await openTestDb(kind);
  const dataDir = mkdtempSync(path.join(tmpdir(), "nestbox-routes-"));
  const config: ServerConfig = {
    host: "127.0.0.1",
    port: 0,
    dataDir,
    databaseUrl: undefined,
    jwtSecret: randomBytes(32),
    domain: "localhost",
    publicUrl,
  };
  const deps: AppDeps = {
    db: t.db,
    config,
    sandboxes: noSandboxes,
    agents: new AgentClients(() => {}),
  };
  return {
    t,
    deps,
    async close() {
      await t.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
