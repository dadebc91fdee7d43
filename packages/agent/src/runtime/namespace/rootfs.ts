// Internal: template root filesystems of the namespace runtime, plain directory trees (the
// `root` directory of `$NESTBOX_DIR/templates-ns/<name>`) that sandboxes use as their overlay's
// lower layer.
//
// The `base` template comes from the guest image's ext4 file, extracted once: mounted read-only
// through a loop device inside a private mount namespace (`unshare --mount`) and copied out. The
// mount exists only in that namespace, so when the copying process ends — normally, or killed
// together with a crashed agent — the kernel drops the mount and the loop device (mount(8) sets
// it up with autoclear) with it: nothing can leak. A directory rather than the mounted image as
// the lower layer keeps sandboxes free of any loop device whose lifetime we would have to track
// across agent restarts.
//
// Every new template is built in a `.tmp-<name>-<agent pid>-<random>` directory and renamed into
// place, so a reader sees a complete template or none; leftovers of dead agents are removed on
// the next prepare.
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../log.js";
import { GUEST_ADDRESS } from "../../network/netns.js";
import { ImageNotBuiltError, loadGuestImage } from "../../qemu/image.js";
import { RuntimeError, type TemplateSummary } from "../runtime.js";
import { isGone, runCommand } from "./command.js";
import { overlaysUsing } from "./overlay.js";

const TEMPLATE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const DEFAULT_HOSTNAME = "nestbox";
/** Same default as the VM init (images/guest/nestbox-init). */
const DEFAULT_DNS = "8.8.8.8";

export interface TemplateMeta {
  name: string;
  source: "image" | "snapshot" | "flatten";
  /** The guest image build the root came from (source "image"). */
  imageHash?: string;
  /** Sandbox id the template was taken from (snapshot/flatten). */
  fromSandbox?: string;
  createdAt: string;
  sizeBytes: number;
  /** /etc/hostname of the root, read once so starts need not. */
  hostname: string;
}

export interface TemplateInfo {
  meta: TemplateMeta;
  /** The directory sandboxes mount as their lower layer. */
  root: string;
}

export function checkTemplateName(name: string): void {
  if (!TEMPLATE_NAME.test(name)) {
    throw new RuntimeError("invalid_argument", `invalid template name: ${JSON.stringify(name)}`);
  }
}

export class TemplateStore {
  private readonly cache = new Map<string, TemplateInfo>();
  private readonly preparing = new Map<string, Promise<void>>();

  constructor(
    /** `$NESTBOX_DIR/templates-ns` */
    readonly dir: string,
    /** `$NESTBOX_DIR/images`, where images/build.sh puts guest images. */
    readonly imagesDir: string,
    private readonly log: Logger,
  ) {}

  rootOf(name: string): string {
    return join(this.dir, name, "root");
  }

  /** The template, or not_found. Cached: templates are immutable once renamed into place. */
  async get(name: string): Promise<TemplateInfo> {
    checkTemplateName(name);
    const cached = this.cache.get(name);
    if (cached) return cached;
    let meta: TemplateMeta;
    try {
      meta = JSON.parse(
        await readFile(join(this.dir, name, "template.json"), "utf8"),
      ) as TemplateMeta;
    } catch (error) {
      if (isGone(error)) {
        throw new RuntimeError(
          "not_found",
          `template '${name}' is not prepared for the namespace runtime`,
        );
      }
      throw error;
    }
    const info = { meta, root: this.rootOf(name) };
    this.cache.set(name, info);
    return info;
  }

  /** Extracts an image-backed template (e.g. `base`); other templates must already exist. */
  prepare(name: string): Promise<void> {
    checkTemplateName(name);
    // One extraction per template at a time; concurrent callers share it.
    const running = this.preparing.get(name);
    if (running) return running;
    const job = this.prepareOnce(name).finally(() => this.preparing.delete(name));
    this.preparing.set(name, job);
    return job;
  }

  private async prepareOnce(name: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.removeLeftovers();
    let existing: TemplateInfo | undefined;
    try {
      existing = await this.get(name);
    } catch (error) {
      if (!(error instanceof RuntimeError && error.code === "not_found")) throw error;
    }
    if (existing && existing.meta.source !== "image") return;

    let image: Awaited<ReturnType<typeof loadGuestImage>>;
    try {
      image = await loadGuestImage(name, this.imagesDir);
    } catch (error) {
      if (existing) return;
      if (error instanceof ImageNotBuiltError) {
        throw new RuntimeError("not_found", error.message, { cause: error });
      }
      throw error;
    }
    if (existing) {
      if (existing.meta.imageHash === image.manifest.hash) return;
      const users = await overlaysUsing(existing.root);
      if (users.length > 0) {
        this.log.warn("guest image was rebuilt; keeping the old template root while in use", {
          template: name,
          sandboxes: users.length,
        });
        return;
      }
    }

    const started = Date.now();
    const tmp = await this.makeTmp(name);
    try {
      const root = join(tmp, "root");
      const mnt = join(tmp, "mnt");
      await mkdir(root);
      await mkdir(mnt);
      await runCommand([
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        // noload: never replay the journal, the image must stay byte-identical.
        'mount -o ro,loop,noload "$1" "$2" && exec cp -a "$2/." "$3/"',
        "nestbox-extract",
        image.rootfsPath,
        mnt,
        root,
      ]);
      await rm(mnt, { recursive: true });
      const hostname = await bakeGuestFiles(root);
      await this.install(name, tmp, {
        name,
        source: "image",
        imageHash: image.manifest.hash,
        createdAt: new Date().toISOString(),
        sizeBytes: await treeSize(root),
        hostname,
      });
    } catch (error) {
      await rm(tmp, { recursive: true, force: true });
      throw error;
    }
    this.log.info("template root extracted", { template: name, ms: Date.now() - started });
  }

  /**
   * Creates template `name` from a directory tree (a sandbox's merged root). Refuses to replace
   * an existing template: sandboxes may be running on it.
   */
  async createFromTree(
    name: string,
    source: string,
    origin: { kind: "snapshot" | "flatten"; sandboxId: string },
  ): Promise<{ sizeBytes: number }> {
    checkTemplateName(name);
    if (await this.has(name)) {
      throw new RuntimeError("failed_precondition", `template '${name}' already exists`);
    }
    await mkdir(this.dir, { recursive: true });
    const tmp = await this.makeTmp(name);
    try {
      const root = join(tmp, "root");
      await mkdir(root);
      await runCommand(["cp", "-a", "--reflink=auto", `${source}/.`, `${root}/`]);
      const meta: TemplateMeta = {
        name,
        source: origin.kind,
        fromSandbox: origin.sandboxId,
        createdAt: new Date().toISOString(),
        sizeBytes: await treeSize(root),
        hostname: await readHostname(root),
      };
      await this.install(name, tmp, meta);
      return { sizeBytes: meta.sizeBytes };
    } catch (error) {
      await rm(tmp, { recursive: true, force: true });
      throw error;
    }
  }

  async list(): Promise<TemplateSummary[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (error) {
      if (isGone(error)) return [];
      throw error;
    }
    const out: TemplateSummary[] = [];
    for (const name of names) {
      if (name.startsWith(".") || !TEMPLATE_NAME.test(name)) continue;
      try {
        const { meta } = await this.get(name);
        out.push({ name, hasMemorySnapshot: false, sizeBytes: meta.sizeBytes });
      } catch (error) {
        // A directory without template.json is not a template (yet): skip, but say so.
        this.log.warn("skipping unreadable template", { template: name, error: String(error) });
      }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  async delete(name: string): Promise<void> {
    const info = await this.get(name);
    const users = await overlaysUsing(info.root);
    if (users.length > 0) {
      throw new RuntimeError(
        "failed_precondition",
        `template '${name}' is in use by ${users.length} sandbox(es)`,
      );
    }
    this.cache.delete(name);
    // Rename first so the template disappears atomically, then delete at leisure.
    const trash = join(
      this.dir,
      `.tmp-trash-${name}-${process.pid}-${randomBytes(4).toString("hex")}`,
    );
    await rename(join(this.dir, name), trash);
    await rm(trash, { recursive: true, force: true });
  }

  private async has(name: string): Promise<boolean> {
    try {
      await this.get(name);
      return true;
    } catch (error) {
      if (error instanceof RuntimeError && error.code === "not_found") return false;
      throw error;
    }
  }

  private async makeTmp(name: string): Promise<string> {
    const tmp = join(this.dir, `.tmp-${name}-${process.pid}-${randomBytes(4).toString("hex")}`);
    await mkdir(tmp);
    return tmp;
  }

  /** Moves a finished tmp directory into place, replacing (and deleting) an older version. */
  private async install(name: string, tmp: string, meta: TemplateMeta): Promise<void> {
    await writeFile(join(tmp, "template.json"), `${JSON.stringify(meta, null, 2)}\n`);
    const target = join(this.dir, name);
    const old = join(this.dir, `.tmp-old-${name}-${process.pid}-${randomBytes(4).toString("hex")}`);
    let replaced = false;
    try {
      await rename(target, old);
      replaced = true;
    } catch (error) {
      if (!isGone(error)) throw error;
    }
    await rename(tmp, target);
    this.cache.set(name, { meta, root: join(target, "root") });
    if (replaced) await rm(old, { recursive: true, force: true });
  }

  /** Removes `.tmp-*` directories whose agent process is gone (a crash mid-extraction). */
  private async removeLeftovers(): Promise<void> {
    for (const entry of await readdir(this.dir)) {
      const match = /^\.tmp-.*-(\d+)-[0-9a-f]{8}$/.exec(entry);
      if (!match) continue;
      const pid = Number(match[1]);
      // Our own are in use (a failed operation deletes its directory itself).
      if (pid === process.pid || pidAlive(pid)) continue;
      this.log.info("removing leftover template directory", { entry });
      await rm(join(this.dir, entry), { recursive: true, force: true });
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return !isGone(error);
  }
}

async function readHostname(root: string): Promise<string> {
  try {
    const name = (await readFile(join(root, "etc/hostname"), "utf8")).trim();
    return /^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(name) ? name : DEFAULT_HOSTNAME;
  } catch (error) {
    if (isGone(error)) return DEFAULT_HOSTNAME;
    throw error;
  }
}

/**
 * Writes what the VM init writes at every boot (/etc/hosts, /etc/resolv.conf) into the template
 * once: every namespace sandbox has the same address and hostname, so starts need no writes.
 */
async function bakeGuestFiles(root: string): Promise<string> {
  const hostname = await readHostname(root);
  await writeFile(
    join(root, "etc/hosts"),
    `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${GUEST_ADDRESS}\t${hostname}\n`,
  );
  await rm(join(root, "etc/resolv.conf"), { force: true });
  await writeFile(join(root, "etc/resolv.conf"), `nameserver ${DEFAULT_DNS}\n`);
  return hostname;
}

/** Bytes allocated by a tree (what it costs on disk, sparse files and hard links counted once). */
export async function treeSize(path: string): Promise<number> {
  const { stdout } = await runCommand(["du", "-s", "-x", "-B1", path]);
  return Number(stdout.split("\t")[0]);
}
