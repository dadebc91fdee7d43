// Where the qemu runtime keeps its files.
//
//   $NESTBOX_DIR/templates/<name>/current -> <version>     symlink, swapped with a rename
//   $NESTBOX_DIR/templates/<name>/<version>/template.json
//                                          disk.qcow2       (snapshot templates)
//                                          rootfs.raw       (flattened templates, sparse)
//                                          mem, state       (memory snapshot: RAM file + device state)
//   <sandbox dir>/disk.qcow2 machine.json qmp.sock qemu.pid serial.log qemu.log [pause.state]
//
// A version directory is complete before it is renamed into place and never written again:
// clones map its `mem` and their overlays point at its disk. Rebuilds make a new version.
import { join } from "node:path";

export const TEMPLATE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function templatesRoot(nestboxDir: string): string {
  return join(nestboxDir, "templates");
}

export function templateDir(nestboxDir: string, name: string): string {
  return join(templatesRoot(nestboxDir), name);
}

export const CURRENT_LINK = "current";
export const TEMPLATE_JSON = "template.json";
export const TEMPLATE_DISK = "disk.qcow2";
export const TEMPLATE_ROOTFS = "rootfs.raw";
export const TEMPLATE_MEM = "mem";
export const TEMPLATE_STATE = "state";

/** Files the runtime creates in a sandbox directory (and removes on stop). */
export const sandboxFiles = {
  disk: "disk.qcow2",
  machine: "machine.json",
  qmp: "qmp.sock",
  pid: "qemu.pid",
  serial: "serial.log",
  log: "qemu.log",
  pauseState: "pause.state",
  pauseStateTmp: "pause.state.tmp",
} as const;

export function sandboxPath(dir: string, file: keyof typeof sandboxFiles): string {
  return join(dir, sandboxFiles[file]);
}

/** Quotes a path for the `/bin/sh -c` that QEMU's `exec:` migration URIs run. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/** Unix socket paths are limited to 107 bytes; QEMU fails late and vaguely otherwise. */
export const MAX_SOCKET_PATH = 107;
