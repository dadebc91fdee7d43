/**
 * Regenerates the SDK's API types from the control plane's own OpenAPI document:
 * starts the server in-process (embedded database in a temporary directory, a free loopback
 * port), writes its /openapi.json to packages/sdk/openapi/openapi.json, then runs
 * openapi-typescript into packages/sdk/src/client/api-types.ts and formats both with Biome.
 *
 *   node --import tsx scripts/gen-openapi-types.ts [--check]
 *
 * --check writes nothing and exits 1 when the committed files differ from what it would write.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "../packages/server/src/main.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const sdk = path.join(root, "packages/sdk");
const targets = {
  doc: path.join(sdk, "openapi/openapi.json"),
  types: path.join(sdk, "src/client/api-types.ts"),
};
const check = process.argv.includes("--check");

async function fetchDocument(): Promise<unknown> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "nestbox-openapi-"));
  try {
    const server = await startServer({
      config: {
        host: "127.0.0.1",
        port: 0,
        dataDir,
        databaseUrl: undefined,
        jwtSecret: randomBytes(32),
        domain: "localhost",
        publicUrl: "http://127.0.0.1:0",
      },
      log: () => {},
    });
    try {
      const res = await fetch(`${server.url}/openapi.json`);
      if (!res.ok) throw new Error(`/openapi.json answered ${res.status}`);
      return await res.json();
    } finally {
      await server.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const out = await mkdtemp(path.join(tmpdir(), "nestbox-openapi-out-"));
  try {
    const doc = path.join(out, "openapi.json");
    const types = path.join(out, "api-types.ts");
    await writeFile(doc, `${JSON.stringify(await fetchDocument(), null, 2)}\n`);
    // Request fields with a server-side default stay optional in the generated types.
    execFileSync(
      path.join(sdk, "node_modules/.bin/openapi-typescript"),
      [doc, "-o", types, "--default-non-nullable", "false"],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    execFileSync(
      path.join(root, "node_modules/.bin/biome"),
      // The temp files are outside the repository, where .gitignore handling does not apply.
      ["format", "--write", "--vcs-enabled=false", `--config-path=${root}`, doc, types],
      { cwd: out, stdio: "pipe" },
    );
    let stale = false;
    for (const [tmp, target] of [
      [doc, targets.doc],
      [types, targets.types],
    ] as const) {
      const fresh = await readFile(tmp, "utf8");
      const old = await readFile(target, "utf8").catch(() => "");
      if (fresh === old) continue;
      stale = true;
      if (check) process.stderr.write(`${path.relative(root, target)} is out of date\n`);
      else {
        await writeFile(target, fresh);
        process.stdout.write(`wrote ${path.relative(root, target)}\n`);
      }
    }
    if (check && stale) {
      process.stderr.write("run: node --import tsx scripts/gen-openapi-types.ts\n");
      process.exitCode = 1;
    } else if (!stale) process.stdout.write("API types are up to date\n");
  } finally {
    await rm(out, { recursive: true, force: true });
  }
}

await main();
