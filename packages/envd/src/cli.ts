#!/usr/bin/env node
import { main, UsageError } from "./main.js";

main(process.argv.slice(2)).catch((err: unknown) => {
  if (
    err instanceof UsageError ||
    (err instanceof Error &&
      "code" in err &&
      String((err as NodeJS.ErrnoException).code).startsWith("ERR_PARSE_ARGS"))
  ) {
    process.stderr.write(`envd: ${err.message}\nRun with --help for usage.\n`);
    process.exit(2);
  }
  process.stderr.write(
    `envd: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
