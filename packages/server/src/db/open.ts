import { chmodSync, mkdirSync } from "node:fs";
import path from "node:path";
import type { Db } from "./db.js";

export interface OpenDbOptions {
  /** PostgreSQL connection URL; when unset, the embedded PGlite database is used. */
  databaseUrl?: string;
  /** `NESTBOX_DIR`: PGlite keeps its files in `${dataDir}/db`. */
  dataDir: string;
  /** Where background database errors are reported (default: stderr). */
  log?: (line: string) => void;
}

/**
 * PostgreSQL when a URL is given, else embedded PGlite in `${dataDir}/db` (created, mode 0700:
 * it holds password and key hashes). Each driver is imported only when chosen, so a PGlite
 * deployment never loads `pg` and vice versa.
 */
export async function openDb(opts: OpenDbOptions): Promise<Db> {
  const url = opts.databaseUrl?.trim();
  if (url) {
    if (!/^postgres(ql)?:\/\//.test(url)) {
      throw new Error("the database URL must start with postgres:// or postgresql://");
    }
    const { openPostgres } = await import("./postgres.js");
    return openPostgres(url, opts.log ? { log: opts.log } : {});
  }
  if (!opts.dataDir) throw new Error("no data directory given for the embedded database");
  const dir = path.resolve(opts.dataDir, "db");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode applies only to directories it creates; an existing one is tightened too.
  chmodSync(dir, 0o700);
  const { openPglite } = await import("./pglite.js");
  return openPglite(dir);
}
