// Several host agents may share one NESTBOX_DIR (tests and benchmarks run agent instances side
// by side; after an image rebuild they all want to rebuild `base` at once). Template work takes
// a lock file per template so one process builds while the others wait and then find the
// result, instead of deleting each other's build directories.
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { templatesRoot } from "./paths.js";
import { isProcessAlive, readStatFields, sleep } from "./process.js";

const LOCK_WAIT_MS = 20 * 60_000;

function ownStartTime(): number {
  return Number(readStatFields(process.pid)?.[19] ?? 0);
}

/** Runs `work` holding `<templates>/.<name>.lock`; a lock whose holder has died is taken over. */
export async function withTemplateFileLock<T>(
  nestboxDir: string,
  name: string,
  work: () => Promise<T>,
): Promise<T> {
  const root = templatesRoot(nestboxDir);
  await mkdir(root, { recursive: true });
  const lockPath = join(root, `.${name}.lock`);
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const fh = await open(lockPath, "wx", 0o600);
      await fh.writeFile(`${process.pid} ${ownStartTime()}\n`);
      await fh.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const holder = await readFile(lockPath, "utf8").catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return "";
      throw error;
    });
    const [pid, start] = holder.trim().split(" ").map(Number);
    // An empty file is a holder between open and write: give it a moment.
    if (holder && !(pid && isProcessAlive(pid, start))) {
      await rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline)
      throw new Error(
        `template ${name}: still locked by process ${pid} after ${LOCK_WAIT_MS / 60_000} min`,
      );
    await sleep(250);
  }
  try {
    return await work();
  } finally {
    await rm(lockPath, { force: true });
  }
}
