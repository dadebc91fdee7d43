import type { Template } from "../client/index.js";
import { parse, positionals, sandboxId, TEMPLATE_NAME_RE } from "./args.js";
import { type Subcommand, UsageError } from "./command.js";
import { bytes, json, seconds, table } from "./format.js";

/** `nestbox template <command>`. */
export const TEMPLATE_COMMANDS: Record<string, Subcommand> = {
  list: {
    synopsis: ["list [--json]"],
    usage:
      "Usage: nestbox template list [--json]\n\nLists your team's templates and the platform's.",
    async run(args, ctx) {
      const w = "template list";
      const { values, positionals: pos } = parse(w, args, { json: { type: "boolean" } });
      positionals(w, pos, []);
      const templates: Template[] = await ctx.client().templates.list();
      if (values.json) {
        ctx.io.stdout.write(json(templates));
        return 0;
      }
      ctx.io.stdout.write(
        table([
          ["NAME", "KIND", "OWNER", "VCPUS", "MEMORY", "SIZE", "CREATED"],
          ...templates.map((t) => [
            t.name,
            t.kind,
            t.platform ? "platform" : "team",
            t.vcpus === null ? "-" : String(t.vcpus),
            t.memory_mb === null ? "-" : `${t.memory_mb} MiB`,
            bytes(t.size_bytes),
            seconds(t.created_at),
          ]),
        ]),
      );
      return 0;
    },
  },

  snapshot: {
    synopsis: ["snapshot <sandbox-id> <name>"],
    usage: `Usage: nestbox template snapshot <sandbox-id> <name>

Turns a running or paused sandbox into the team template <name>; the sandbox is destroyed.
Names: 1-63 characters a-z, 0-9, . _ - (starting with a letter or digit).`,
    async run(args, ctx) {
      const w = "template snapshot";
      const [id, name] = positionals(w, parse(w, args, {}).positionals, ["sandbox-id", "name"]);
      if (!TEMPLATE_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a template name (a-z, 0-9, . _ -)`);
      const t = await ctx.client().templates.snapshot(sandboxId(w, id), name as string);
      ctx.io.stdout.write(`${t.name}\n`);
      return 0;
    },
  },

  delete: {
    synopsis: ["delete <name>"],
    usage: "Usage: nestbox template delete <name>\n\nDeletes a team template.",
    async run(args, ctx) {
      const w = "template delete";
      const [name] = positionals(w, parse(w, args, {}).positionals, ["name"]);
      if (!TEMPLATE_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a template name`);
      await ctx.client().templates.delete(name as string);
      return 0;
    },
  },
};
