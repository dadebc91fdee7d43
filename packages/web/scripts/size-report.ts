/**
 * Prints the compressed size of the JavaScript and CSS a first visit to the sandboxes page
 * downloads (issue 13's budget: 250 KB): the kit entry, the app entry, and the nodes of the
 * root layout, the (app) layout and the sandboxes page, with everything they import
 * statically. Run after `npm run build`: node --import tsx scripts/size-report.ts [route]
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

interface Chunk {
  file: string;
  src?: string;
  isEntry?: boolean;
  imports?: string[];
  css?: string[];
}

const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const kitDir = path.join(webDir, ".svelte-kit");
const buildDir = path.join(webDir, "build");
const BUDGET_KB = 250;

const route = process.argv[2] ?? "(app)/sandboxes";
const components = ["+layout.svelte", "(app)/+layout.svelte", `${route}/+page.svelte`];

const manifestFile = path.join(kitDir, "output/client/.vite/manifest.json");
if (!existsSync(manifestFile)) {
  console.error("no build: run npm run build in packages/web first");
  process.exit(1);
}
const manifest = JSON.parse(readFileSync(manifestFile, "utf8")) as Record<string, Chunk>;

/** The manifest keys of the generated node modules that load `components`. */
function nodeKeys(): string[] {
  const nodesDir = path.join(kitDir, "generated/client-optimized/nodes");
  const keys = Object.keys(manifest).filter((k) => k.includes("generated/client-optimized/nodes/"));
  return components.map((c) => {
    const key = keys.find((k) => {
      const text = readFileSync(path.join(nodesDir, path.basename(k)), "utf8");
      return text.includes(`src/routes/${c}"`);
    });
    if (!key) throw new Error(`no build node loads src/routes/${c}`);
    return key;
  });
}

const roots = [
  ...Object.keys(manifest).filter((k) => manifest[k]?.isEntry && !k.includes("/nodes/")),
  ...nodeKeys(),
];
const files = new Set<string>();
const visit = (key: string) => {
  const chunk = manifest[key];
  if (!chunk || files.has(chunk.file)) return;
  files.add(chunk.file);
  for (const css of chunk.css ?? []) files.add(css);
  for (const imp of chunk.imports ?? []) visit(imp);
};
for (const r of roots) visit(r);

const size = (f: string) => (existsSync(f) ? statSync(f).size : 0);
let raw = 0;
let gz = 0;
let br = 0;
for (const f of files) {
  const file = path.join(buildDir, f);
  raw += size(file);
  gz += size(`${file}.gz`) || size(file);
  br += size(`${file}.br`) || size(file);
}
const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
console.log(`initial load of /${route.replace(/^\(app\)\//, "")}: ${files.size} JS/CSS files`);
console.log(
  `  raw ${kb(raw)}  gzip ${kb(gz)}  brotli ${kb(br)}  (budget ${BUDGET_KB} KB compressed)`,
);
if (gz > BUDGET_KB * 1024) {
  console.error(`over budget: gzip ${kb(gz)} > ${BUDGET_KB} KB`);
  process.exit(1);
}
