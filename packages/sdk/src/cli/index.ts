// The client commands as a library: `@nestbox/cli` puts them in the `nestbox` command table.
export { clientCommands, createClientCommands } from "./client-commands.js";
export { type Command, HELP_FLAGS, UsageError } from "./command.js";
export type { CliIo } from "./io.js";
