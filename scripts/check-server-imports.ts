/**
 * Checks the control plane's layering: nothing under src/db or src/auth imports from src/api or
 * src/services (db ← services ← api; auth may use db), and no import cycle in
 * packages/server/src (type-only imports count too). Exit status 1 on a violation.
 *
 *   node --import tsx scripts/check-server-imports.ts
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../packages/server/src");
const files = (readdirSync(root, { recursive: true }) as string[])
  .filter((f) => f.endsWith(".ts"))
  .map((f) => path.join(root, f));
const IMPORT = /^\s*(?:import|export)\s[^;]*?from\s+"(\.[^"]+)"/gms;

const graph = new Map<string, string[]>();
for (const file of files) {
  const deps = [...readFileSync(file, "utf8").matchAll(IMPORT)].map((m) =>
    path.resolve(path.dirname(file), (m[1] ?? "").replace(/\.js$/, ".ts")),
  );
  graph.set(file, deps);
}

const rel = (f: string) => path.relative(root, f);
const problems: string[] = [];
for (const [file, deps] of graph) {
  if (!/^(db|auth)\//.test(rel(file))) continue;
  for (const d of deps)
    if (/^(api|services)\//.test(rel(d))) problems.push(`${rel(file)} imports ${rel(d)}`);
}

// Depth-first search; a grey node reached again closes a cycle.
const state = new Map<string, "grey" | "black">();
const stack: string[] = [];
function visit(f: string): void {
  state.set(f, "grey");
  stack.push(f);
  for (const d of graph.get(f) ?? []) {
    if (state.get(d) === "grey")
      problems.push(`cycle: ${[...stack.slice(stack.indexOf(d)), d].map(rel).join(" → ")}`);
    else if (!state.has(d) && graph.has(d)) visit(d);
  }
  stack.pop();
  state.set(f, "black");
}
for (const f of graph.keys()) if (!state.has(f)) visit(f);

for (const p of problems) console.error(p);
console.log(`${graph.size} modules, ${problems.length} layering problems`);
process.exitCode = problems.length ? 1 : 0;
