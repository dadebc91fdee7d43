// The agent's logger as its modules see it: main.ts writes JSON lines, tests pass their own or
// SILENT_LOGGER. Structural, so any object with these methods fits.

export interface Logger {
  /** Optional: only some loggers keep debug lines. */
  debug?(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export const SILENT_LOGGER: Logger = {
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
};
