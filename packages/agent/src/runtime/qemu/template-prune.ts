import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger as AgentLogger } from "../../log.js";
import { sandboxFiles, templateDir } from "./paths.js";
import { listAllVersions, listSizeVariants, readCurrent, versionDir } from "./template-store.js";

/** Pruning only reports; any logger with info and warn will do (tests pass a recorder). */
type Logger = Pick<AgentLogger, "info" | "warn">;

/**
 * Template versions still referenced: by a sandbox (its machine.json names the version its
 * RAM and disk come from) or by another template whose disk overlays it. Sandboxes live in
 * `$NESTBOX_DIR/sandboxes/<instance>/<id>/` (the manager's layout), scanned two levels deep.
 */
async function versionsInUse(nestboxDir: string): Promise<Set<string>> {
  const used = new Set<string>();
  const root = join(nestboxDir, "sandboxes");
  const dirsBelow = async (dir: string): Promise<string[]> => {
    try {
      return (await readdir(dir, { withFileTypes: true }))
        .filter((e) => e.isDirectory())
        .map((e) => join(dir, e.name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  };
  for (const instance of await dirsBelow(root)) {
    for (const sandbox of await dirsBelow(instance)) {
      try {
        const m = JSON.parse(await readFile(join(sandbox, sandboxFiles.machine), "utf8")) as {
          template?: { name?: string; version?: string };
        };
        if (m.template?.name && m.template.version)
          used.add(`${m.template.name}/${m.template.version}`);
      } catch (err) {
        // No machine.json: not a qemu sandbox, or one still being created (which uses current).
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
  }
  for (const meta of await listAllVersions(nestboxDir)) {
    if (meta.parent) used.add(`${meta.parent.name}/${meta.parent.version}`);
  }
  return used;
}

/**
 * Removes a template's old versions that nothing uses any more, so image rebuilds do not
 * accumulate RAM files and disks. The current version is always kept.
 */
export async function pruneTemplateVersions(
  nestboxDir: string,
  name: string,
  log: Logger,
): Promise<void> {
  const current = await readCurrent(nestboxDir, name);
  if (!current) return;
  const used = await versionsInUse(nestboxDir);
  for (const meta of await listAllVersions(nestboxDir)) {
    if (meta.name !== name || meta.version === current.version) continue;
    if (used.has(`${meta.name}/${meta.version}`)) continue;
    await rm(versionDir(nestboxDir, meta), { recursive: true, force: true });
    log.info("removed unused template version", { template: name, version: meta.version });
  }
}

/**
 * Removes size variants of `template` built from one of its older versions that no sandbox
 * uses (a variant is rebuilt on the next sandbox of its size), so they stop holding the
 * template's old versions on disk.
 */
export async function pruneStaleVariants(
  nestboxDir: string,
  template: string,
  log: Logger,
): Promise<void> {
  const current = await readCurrent(nestboxDir, template);
  if (!current) return;
  const used = await versionsInUse(nestboxDir);
  const versions = await listAllVersions(nestboxDir);
  for (const variant of await listSizeVariants(nestboxDir, template)) {
    const mine = versions.filter((meta) => meta.name === variant);
    const stale = mine.every((meta) => meta.parent?.version !== current.version);
    if (!stale || mine.some((meta) => used.has(`${meta.name}/${meta.version}`))) continue;
    await rm(templateDir(nestboxDir, variant), { recursive: true, force: true });
    log.info("removed size variant of an old template version", { template, variant });
  }
}
