/** Structured one-line JSON logs on stderr; the guest init forwards them to the console. */
export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

type Level = "info" | "warn" | "error";

export function createLogger(base: Record<string, unknown> = {}, quiet = false): Logger {
  const write = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (quiet && level === "info") return;
    const line = JSON.stringify({ ts: new Date().toISOString(), level, msg, ...base, ...fields });
    process.stderr.write(`${line}\n`);
  };
  return {
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (f) => createLogger({ ...base, ...f }, quiet),
  };
}
