import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { it } from "node:test";
import { fileURLToPath } from "node:url";
import { NESTBOX_VERSION } from "../../packages/proto/src/version.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

it("every package's package.json carries the one Nestbox version", () => {
  const root = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8")) as {
    workspaces: string[];
  };
  for (const ws of root.workspaces.filter((w) => w.startsWith("packages/"))) {
    const pkg = JSON.parse(readFileSync(path.join(repoRoot, ws, "package.json"), "utf8")) as {
      version?: string;
    };
    assert.equal(pkg.version, NESTBOX_VERSION, ws);
  }
});
