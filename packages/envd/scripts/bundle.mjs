// Bundles envd into one ESM file plus the native addons it loads at run time, so the
// guest image needs only a Node binary and this directory (dist/bundle).
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const out = path.join(pkgDir, "dist/bundle");
const require = createRequire(path.join(pkgDir, "package.json"));
const NATIVE = ["node-pty", "fs-xattr"];

// Some addons hide package.json behind "exports", so look the directory up by hand.
function packageDir(name) {
  for (const base of require.resolve.paths(name) ?? []) {
    const dir = path.join(base, name);
    if (existsSync(path.join(dir, "package.json"))) return dir;
  }
  throw new Error(`cannot find ${name} from ${pkgDir}`);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: [path.join(pkgDir, "src/cli.ts")],
  outfile: path.join(out, "envd.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  external: NATIVE,
  // Bundled CommonJS dependencies (busboy) call require(); give ESM output one.
  banner: {
    js: "import { createRequire as __nbxCreateRequire } from 'node:module'; const require = __nbxCreateRequire(import.meta.url);",
  },
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
});

// Copy each native addon's runtime files only: JS, package.json and the compiled .node.
for (const name of NATIVE) {
  const src = packageDir(name);
  const dst = path.join(out, "node_modules", name);
  mkdirSync(dst, { recursive: true });
  cpSync(path.join(src, "package.json"), path.join(dst, "package.json"));
  for (const entry of readdirSync(src)) {
    const full = path.join(src, entry);
    if (entry.endsWith(".js")) cpSync(full, path.join(dst, entry));
  }
  if (existsSync(path.join(src, "lib"))) {
    cpSync(path.join(src, "lib"), path.join(dst, "lib"), {
      recursive: true,
      filter: (f) => !f.endsWith(".test.js") && !f.endsWith(".map"),
    });
  }
  const release = path.join(src, "build/Release");
  if (!existsSync(release))
    throw new Error(`${name} has no compiled addon at ${release}; run npm rebuild ${name}`);
  mkdirSync(path.join(dst, "build/Release"), { recursive: true });
  for (const f of readdirSync(release)) {
    if (f.endsWith(".node") || f === "spawn-helper")
      cpSync(path.join(release, f), path.join(dst, "build/Release", f));
  }
}
// envd's own addon (settimeofday for --sync-clock), built by `npm run build:native`; envd looks
// for it at native/clock.node beside the bundle. Without it a restored guest keeps its
// snapshot's clock, so a bundle without it is an error, not a warning.
const clockAddon = path.join(pkgDir, "native/clock/build/Release/clock.node");
if (!existsSync(clockAddon))
  throw new Error(`envd's clock addon is not built (${clockAddon}); run npm run build:native`);
mkdirSync(path.join(out, "native"), { recursive: true });
cpSync(clockAddon, path.join(out, "native", "clock.node"));

writeFileSync(
  path.join(out, "package.json"),
  `${JSON.stringify({ type: "module", private: true }, null, 2)}\n`,
);
console.log(`envd bundle written to ${path.relative(process.cwd(), out) || out}`);
