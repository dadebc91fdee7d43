// Reads the manifest that images/build.sh writes next to a built guest image.
import { readFile, realpath } from "node:fs/promises";
import { join } from "node:path";

export interface ImageManifest {
  name: string;
  hash: string;
  builtAt: string;
  buildSeconds: number;
  kernelKind: "debian" | "minimal";
  kernelVersion: string;
  /** File names, relative to the image directory. */
  kernel: string;
  initrd: string | null;
  rootfs: string;
  rootfsFormat: "raw";
  /** The image's part of the kernel command line (root device, init). */
  cmdline: string;
  /** Whether the kernel expects QEMU's ACPI tables (false: start QEMU with acpi=off). */
  acpi: boolean;
  sizes: { kernel: number; initrd?: number; rootfs: number; rootfsContents: number };
  nodeVersion: string;
  suite: string;
  guest: { address: string; prefixLength: number; gateway: string; envdPort: number };
}

export interface GuestImage {
  /** The concrete build directory (the `base` symlink resolved). */
  dir: string;
  manifest: ImageManifest;
  kernelPath: string;
  initrdPath: string | null;
  rootfsPath: string;
}

export class ImageNotBuiltError extends Error {
  override readonly name = "ImageNotBuiltError";
}

export function defaultImagesDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.NESTBOX_DIR ?? "/var/lib/nestbox", "images");
}

/**
 * Loads `<imagesDir>/<name>/manifest.json`. Paths are resolved through the `base` symlink on
 * purpose: a qcow2 overlay records its backing file's path, and a rebuild swaps the symlink, so
 * overlays must point at the concrete build directory or they would silently change base.
 */
export async function loadGuestImage(
  name = "base",
  imagesDir: string = defaultImagesDir(),
): Promise<GuestImage> {
  let dir: string;
  let text: string;
  try {
    dir = await realpath(join(imagesDir, name));
    text = await readFile(join(dir, "manifest.json"), "utf8");
  } catch (error) {
    throw new ImageNotBuiltError(
      `guest image '${name}' not found in ${imagesDir} (${(error as Error).message}); ` +
        "build it with ./nestbox image build (images/build.sh)",
    );
  }
  const manifest = JSON.parse(text) as ImageManifest;
  return {
    dir,
    manifest,
    kernelPath: join(dir, manifest.kernel),
    initrdPath: manifest.initrd ? join(dir, manifest.initrd) : null,
    rootfsPath: join(dir, manifest.rootfs),
  };
}
