import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { pruneTemplateVersions } from "../../packages/agent/src/runtime/qemu/template-prune.js";

const root = mkdtempSync("/tmp/nbx-prune-");
after(() => rmSync(root, { recursive: true, force: true }));

function version(name: string, v: string, parent?: { name: string; version: string }) {
  const dir = join(root, "templates", name, v);
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, "template.json"),
    JSON.stringify({ format: 1, name, version: v, ...(parent ? { parent } : {}) }),
  );
  writeFileSync(join(dir, "mem"), "x");
}

test("old template versions are removed unless a sandbox or another template uses them", async () => {
  version("base", "v1");
  version("base", "v2");
  version("base", "v3");
  version("base", "v4");
  symlinkSync("v4", join(root, "templates", "base", "current"));
  // v2 backs a running sandbox; v3 is the parent of a snapshot template.
  const sandbox = join(root, "sandboxes", "q", "a".repeat(20));
  mkdirSync(sandbox, { recursive: true });
  writeFileSync(
    join(sandbox, "machine.json"),
    JSON.stringify({ template: { name: "base", version: "v2" } }),
  );
  version("child", "c1", { name: "base", version: "v3" });
  symlinkSync("c1", join(root, "templates", "child", "current"));
  const logged: string[] = [];
  await pruneTemplateVersions(root, "base", {
    info: (m, f) => logged.push(`${m} ${String(f?.version)}`),
    warn: () => {},
  });
  const present = (v: string) => existsSync(join(root, "templates", "base", v));
  assert.deepEqual(["v1", "v2", "v3", "v4"].map(present), [false, true, true, true]);
  assert.deepEqual(logged, ["removed unused template version v1"]);
  assert.ok(existsSync(join(root, "templates", "child", "c1")));
});
