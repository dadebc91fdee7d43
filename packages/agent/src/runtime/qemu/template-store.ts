// Template directories: versions, the `current` symlink, template.json. A version is built in a
// hidden `.build-*` directory and renamed into place complete; `current` is swapped with a
// rename, so readers see the old version or the new one, never a half-written one.
import { randomBytes } from "node:crypto";
import {
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { RuntimeError } from "../runtime.js";
import type { MachineConfig } from "./machine.js";
import { CURRENT_LINK, TEMPLATE_JSON, TEMPLATE_NAME, templateDir, templatesRoot } from "./paths.js";
import { allocatedBytes } from "./process.js";

export interface TemplateMeta {
  format: 1;
  name: string;
  version: string;
  createdAt: string;
  /** How sandboxes of this template must be started (identically to the snapshot's QEMU). */
  machine: MachineConfig;
  /** The disk sandboxes overlay (absolute path, inside this or an ancestor version). */
  disk: { path: string; format: "qcow2" | "raw" };
  /** Memory snapshot: RAM file (mapped by clones) and device state (x-ignore-shared). */
  snapshot: { mem: string; state: string } | null;
  /** Guest image this template was booted from (`base`: rebuilt when the image changes). */
  imageHash?: string;
  /** A template whose disk is an overlay of another template's disk depends on it. */
  parent?: { name: string; version: string };
  /** Boot time of the template (prepare) or how it was made, for the status page. */
  origin: "image" | "snapshot" | "flatten" | "prepare";
}

export function checkTemplateName(name: string): void {
  if (!TEMPLATE_NAME.test(name)) {
    throw new RuntimeError("invalid_argument", `invalid template name: ${JSON.stringify(name)}`);
  }
}

/**
 * A size variant: the template booted and snapshotted at another vCPU count and memory size,
 * so sandboxes of that size are clones too. Its name (`base~1c384m`) is no valid template
 * name, so no RPC can address, list or collide with it.
 */
const VARIANT_NAME = /^([a-z0-9][a-z0-9._-]{0,63})~[1-9][0-9]{0,2}c[1-9][0-9]{1,6}m$/;

export function sizeVariantName(template: string, vcpus: number, memoryMiB: number): string {
  checkTemplateName(template);
  return `${template}~${vcpus}c${memoryMiB}m`;
}

/** The template a size variant belongs to, or undefined for any other name. */
export function variantBase(name: string): string | undefined {
  return VARIANT_NAME.exec(name)?.[1];
}

/** Names the store itself handles: templates and their size variants. */
function checkStoredName(name: string): void {
  if (!TEMPLATE_NAME.test(name) && !VARIANT_NAME.test(name)) checkTemplateName(name);
}

export function newVersion(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
  return `v${stamp}-${randomBytes(3).toString("hex")}`;
}

export interface VersionPaths {
  name: string;
  version: string;
  /** Final location (what template.json and clones refer to). */
  dir: string;
  /** Where it is assembled. */
  buildDir: string;
}

export async function startVersion(nestboxDir: string, name: string): Promise<VersionPaths> {
  checkStoredName(name);
  const version = newVersion();
  const base = templateDir(nestboxDir, name);
  const buildDir = join(base, `.build-${version}`);
  await mkdir(buildDir, { recursive: true });
  return { name, version, dir: join(base, version), buildDir };
}

/** Writes template.json, moves the version into place and points `current` at it. */
export async function commitVersion(paths: VersionPaths, meta: TemplateMeta): Promise<void> {
  await writeFile(join(paths.buildDir, TEMPLATE_JSON), `${JSON.stringify(meta, null, 2)}\n`);
  await rename(paths.buildDir, paths.dir);
  const base = join(paths.dir, "..");
  const tmpLink = join(base, `.current-${randomBytes(4).toString("hex")}`);
  await symlink(paths.version, tmpLink);
  await rename(tmpLink, join(base, CURRENT_LINK));
}

export async function readCurrent(
  nestboxDir: string,
  name: string,
): Promise<TemplateMeta | undefined> {
  checkStoredName(name);
  const base = templateDir(nestboxDir, name);
  let version: string;
  try {
    version = await readlink(join(base, CURRENT_LINK));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  return readVersion(nestboxDir, name, version);
}

export async function readVersion(
  nestboxDir: string,
  name: string,
  version: string,
): Promise<TemplateMeta> {
  const file = join(templateDir(nestboxDir, name), version, TEMPLATE_JSON);
  try {
    return JSON.parse(await readFile(file, "utf8")) as TemplateMeta;
  } catch (error) {
    throw new RuntimeError(
      "internal",
      `template ${name}: cannot read ${file}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

export function versionDir(
  nestboxDir: string,
  meta: Pick<TemplateMeta, "name" | "version">,
): string {
  return join(templateDir(nestboxDir, meta.name), meta.version);
}

export async function listTemplateNames(nestboxDir: string): Promise<string[]> {
  return (await listStoredNames(nestboxDir)).filter((name) => TEMPLATE_NAME.test(name));
}

/** The size variants of `template` on disk. */
export async function listSizeVariants(nestboxDir: string, template: string): Promise<string[]> {
  return (await listStoredNames(nestboxDir)).filter((name) => variantBase(name) === template);
}

/** Templates and size variants. */
async function listStoredNames(nestboxDir: string): Promise<string[]> {
  try {
    const entries = await readdir(templatesRoot(nestboxDir), { withFileTypes: true });
    return entries
      .filter((e) => e.isDirectory() && (TEMPLATE_NAME.test(e.name) || VARIANT_NAME.test(e.name)))
      .map((e) => e.name)
      .sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

/** Every version of every template and size variant (for dependency checks). */
export async function listAllVersions(nestboxDir: string): Promise<TemplateMeta[]> {
  const result: TemplateMeta[] = [];
  for (const name of await listStoredNames(nestboxDir)) {
    const entries = await readdir(templateDir(nestboxDir, name), { withFileTypes: true });
    for (const entry of entries) {
      if (!entry.isDirectory() || entry.name.startsWith(".")) continue;
      try {
        result.push(await readVersion(nestboxDir, name, entry.name));
      } catch (error) {
        // A version without a readable template.json cannot be anyone's parent; skip it.
        if (!(error instanceof RuntimeError)) throw error;
      }
    }
  }
  return result;
}

/** Allocated bytes of all files in a directory (not following links). */
export async function directoryBytes(dir: string): Promise<number> {
  let total = 0;
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await directoryBytes(path);
    else if (entry.isFile()) total += await allocatedBytes(path);
  }
  return total;
}

/** Removes leftovers of interrupted builds (`.build-*`, `.current-*`) of a template. */
export async function removeStaleBuilds(nestboxDir: string, name: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(templateDir(nestboxDir, name));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  for (const entry of entries) {
    if (entry.startsWith(".build-") || entry.startsWith(".current-")) {
      await rm(join(templateDir(nestboxDir, name), entry), { recursive: true, force: true });
    }
  }
}
