#!/usr/bin/env node
import { main, UsageError } from "./main.js";

main(process.argv.slice(2)).catch((err: unknown) => {
  const code = err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
  if (
    err instanceof UsageError ||
    (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))
  ) {
    process.stderr.write(`agent: ${(err as Error).message}\nRun with --help for usage.\n`);
    process.exit(2);
  }
  process.stderr.write(
    `agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
