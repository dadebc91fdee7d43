import { NestboxApiError } from "../client/errors.js";
import { parse, positionals } from "./args.js";
import { type CommandContext, type Subcommand, UsageError } from "./command.js";
import { fieldValue, json, seconds, table } from "./format.js";
import { type Host, hostApi } from "./host-session.js";

const HOST_ID_RE = /^host_[a-z0-9]{20}$/;
const TEAM_ID_RE = /^team_[a-z0-9]{20}$/;
const HOST_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const TAG_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

const AUTH_HELP = `Host commands act as a user: NESTBOX_TOKEN (a session token), or NESTBOX_EMAIL and
NESTBOX_PASSWORD, or on the all-in-one box the admin ($NESTBOX_DIR/admin-password); with only
an API key they can list its BYOC team's hosts. Platform admins manage every host; a BYOC
team's owner and admins manage the team's own.`;

function hostId(where: string, id: string | undefined): string {
  if (!id) throw new UsageError(`${where}: missing <host-id>`);
  if (!HOST_ID_RE.test(id))
    throw new UsageError(`${where}: '${id}' is not a host id (host_ + 20 characters a-z, 0-9)`);
  return id;
}

function tag(where: string, t: string | undefined): string {
  if (!t) throw new UsageError(`${where}: missing <tag>`);
  if (!TAG_RE.test(t))
    throw new UsageError(`${where}: '${t}' is not a tag (1-63 characters a-z, 0-9, . _ -)`);
  return t;
}

const path = (id: string) => ({ params: { path: { id } } });

/** A write refused to an API key gets a hint on how to act as a user. */
async function withHint<T>(ctx: CommandContext, as: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof NestboxApiError && err.status === 403 && as.startsWith("the API key"))
      ctx.io.stderr.write(
        "hint: host management needs a user: set NESTBOX_TOKEN, or NESTBOX_EMAIL and NESTBOX_PASSWORD\n",
      );
    throw err;
  }
}

const mib = (n: number | null) => (n === null ? "-" : `${n} MiB`);

function hostTable(hosts: Host[]): string {
  return table([
    ["ID", "NAME", "TYPE", "TEAM", "STATUS", "SANDBOXES", "MEMORY USED", "TAGS"],
    ...hosts.map((h) => [
      h.id,
      h.name,
      h.type,
      h.team_name ?? "-",
      h.draining ? `${h.status},draining` : h.status,
      String(h.active_sandbox_count),
      h.memory_mb === null ? "-" : `${mib(h.used_memory_mb)} / ${mib(h.memory_mb)}`,
      h.tags.join(",") || "-",
    ]),
  ]);
}

function hostFields(h: Host): string {
  return table(
    Object.entries(h).map(([k, v]) => [
      k,
      k.endsWith("_at") && typeof v === "string" ? seconds(v) : fieldValue(v),
    ]),
  );
}

/** One host id argument, `--json`, and the host printed (drain, undrain, get). */
function hostAction(
  name: string,
  summary: string,
  fn: (api: Awaited<ReturnType<typeof hostApi>>, id: string) => Promise<Host>,
): Subcommand {
  return {
    synopsis: [`${name} <host-id> [--json]`],
    usage: `Usage: nestbox host ${name} <host-id> [--json]\n\n${summary}\n\n${AUTH_HELP}`,
    async run(args, ctx) {
      const w = `host ${name}`;
      const { values, positionals: pos } = parse(w, args, { json: { type: "boolean" } });
      const id = hostId(w, positionals(w, pos, ["host-id"])[0]);
      const api = await hostApi(ctx.io.env);
      const host = await withHint(ctx, api.as, () => fn(api, id));
      ctx.io.stdout.write(values.json ? json(host) : hostFields(host));
      return 0;
    },
  };
}

/** `nestbox host <command>`. */
export const HOST_COMMANDS: Record<string, Subcommand> = {
  list: {
    synopsis: ["list [--type regular|byoc] [--json]"],
    usage: `Usage: nestbox host list [--type regular|byoc] [--json]

Lists hosts: every host for a platform admin (--type narrows it), the BYOC hosts of your team
for everyone else. STATUS is pending, online, unreachable or offline (",draining": no new
sandboxes go there); MEMORY USED is what its agent reported with its last heartbeat.

${AUTH_HELP}`,
    async run(args, ctx) {
      const w = "host list";
      const { values, positionals: pos } = parse(w, args, {
        json: { type: "boolean" },
        type: { type: "string" },
      });
      positionals(w, pos, []);
      const type = values.type;
      if (type !== undefined && type !== "regular" && type !== "byoc")
        throw new UsageError(`${w}: --type must be regular or byoc, got '${type}'`);
      const api = await hostApi(ctx.io.env);
      const { hosts } = await api.call(
        api.api.GET("/v1/hosts", { params: { query: type ? { type } : {} } }),
      );
      ctx.io.stdout.write(values.json ? json(hosts) : hostTable(hosts));
      return 0;
    },
  },

  get: hostAction("get", "Shows one host.", (a, id) =>
    a.call(a.api.GET("/v1/hosts/{id}", path(id))),
  ),

  create: {
    synopsis: ["create <name> [--byoc --team <team-id>] [--json]"],
    usage: `Usage: nestbox host create <name> [--byoc --team <team-id>] [--json]

Creates a host (status pending) and prints its one-time registration token (valid 1 h). Start
its agent with it:
  nestbox agent --control-plane <url> --registration-token <token> [--advertise-url https://…]
A regular host serves every team that is not BYOC (platform admins only). --byoc --team makes
it a host of that BYOC team only: its sandboxes run there and nobody else's do (platform admins,
or the team's owner and admins). Names: 1-63 characters A-Z, a-z, 0-9, . _ -.

${AUTH_HELP}`,
    async run(args, ctx) {
      const w = "host create";
      const { values, positionals: pos } = parse(w, args, {
        json: { type: "boolean" },
        byoc: { type: "boolean" },
        team: { type: "string" },
      });
      const [name] = positionals(w, pos, ["name"]);
      if (!HOST_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a host name (A-Z, a-z, 0-9, . _ -)`);
      if (values.byoc && values.team === undefined)
        throw new UsageError(`${w}: --byoc needs --team <team-id> (the BYOC team that owns it)`);
      if (!values.byoc && values.team !== undefined)
        throw new UsageError(`${w}: --team is only for --byoc hosts`);
      if (values.team !== undefined && !TEAM_ID_RE.test(values.team))
        throw new UsageError(`${w}: '${values.team}' is not a team id (team_ + 20 characters)`);
      const body = values.byoc
        ? { name: name as string, type: "byoc" as const, team_id: values.team }
        : { name: name as string };
      const api = await hostApi(ctx.io.env);
      const res = await withHint(ctx, api.as, () => api.call(api.api.POST("/v1/hosts", { body })));
      if (values.json) ctx.io.stdout.write(json(res));
      else
        ctx.io.stdout.write(
          `host ${res.host.id} (${res.host.name}, ${res.host.type}) is pending\nregistration token (one use, 1 h): ${res.registration_token}\n`,
        );
      return 0;
    },
  },

  delete: {
    synopsis: ["delete <host-id> [--force]"],
    usage: `Usage: nestbox host delete <host-id> [--force]

Deletes a host. While it has active sandboxes (pending, running, paused, missing) the API
refuses and lists them; --force marks them stopped, deletes the host and tells its agent to
destroy them and exit. 'nestbox host preview' shows what a forced delete would stop.

${AUTH_HELP}`,
    async run(args, ctx) {
      const w = "host delete";
      const { values, positionals: pos } = parse(w, args, { force: { type: "boolean" } });
      const id = hostId(w, positionals(w, pos, ["host-id"])[0]);
      const api = await hostApi(ctx.io.env);
      try {
        await withHint(ctx, api.as, () =>
          api.call(
            api.api.DELETE("/v1/hosts/{id}", {
              params: { path: { id }, query: values.force ? { force: "true" } : {} },
            }),
          ),
        );
      } catch (err) {
        if (err instanceof NestboxApiError && err.code === "has_active_sandboxes")
          ctx.io.stderr.write("hint: 'nestbox host preview' lists them; --force stops them\n");
        throw err;
      }
      return 0;
    },
  },

  preview: {
    synopsis: ["preview <host-id> [--json]"],
    usage: `Usage: nestbox host preview <host-id> [--json]

Lists the active sandboxes a forced delete of the host would stop, one id a line.

${AUTH_HELP}`,
    async run(args, ctx) {
      const w = "host preview";
      const { values, positionals: pos } = parse(w, args, { json: { type: "boolean" } });
      const id = hostId(w, positionals(w, pos, ["host-id"])[0]);
      const api = await hostApi(ctx.io.env);
      const res = await withHint(ctx, api.as, () =>
        api.call(api.api.GET("/v1/hosts/{id}/delete-preview", path(id))),
      );
      ctx.io.stdout.write(
        values.json ? json(res) : res.sandbox_ids.map((s: string) => `${s}\n`).join(""),
      );
      return 0;
    },
  },

  token: {
    synopsis: ["token <host-id>"],
    usage: `Usage: nestbox host token <host-id>

Prints a new registration token for a host that has not registered yet (its earlier unused
tokens stop working). A registered host keeps its credentials: this is refused for it.

${AUTH_HELP}`,
    async run(args, ctx) {
      const w = "host token";
      const id = hostId(w, positionals(w, parse(w, args, {}).positionals, ["host-id"])[0]);
      const api = await hostApi(ctx.io.env);
      const res = await withHint(ctx, api.as, () =>
        api.call(api.api.POST("/v1/hosts/{id}/token", path(id))),
      );
      ctx.io.stdout.write(`${res.registration_token}\n`);
      return 0;
    },
  },

  drain: hostAction(
    "drain",
    "Drains a host: no new sandboxes are placed on it; the ones it has keep running.",
    (a, id) => a.call(a.api.POST("/v1/hosts/{id}/drain", path(id))),
  ),

  undrain: hostAction("undrain", "Lets a drained host take new sandboxes again.", (a, id) =>
    a.call(a.api.POST("/v1/hosts/{id}/undrain", path(id))),
  ),

  tags: {
    synopsis: ["tags <host-id>", "tags add <host-id> <tag>", "tags rm <host-id> <tag>"],
    usage: `Usage: nestbox host tags <host-id>
       nestbox host tags add <host-id> <tag>
       nestbox host tags rm <host-id> <tag>

Lists, adds or removes a host's tags (1-63 characters a-z, 0-9, . _ -). A sandbox created with
host_tags (e.g. "host_tags": ["gpu"]) is placed only on a host that has all of them.

${AUTH_HELP}`,
    async run(args, ctx) {
      const { positionals: pos } = parse("host tags", args, {});
      const [first, ...rest] = pos;
      if (first === "add" || first === "rm") {
        const w = `host tags ${first}`;
        const [id, t] = positionals(w, rest, ["host-id", "tag"]);
        const hid = hostId(w, id);
        const tg = tag(w, t);
        const api = await hostApi(ctx.io.env);
        await withHint(ctx, api.as, () =>
          first === "add"
            ? api.call(api.api.POST("/v1/hosts/{id}/tags", { ...path(hid), body: { tag: tg } }))
            : api.call(
                api.api.DELETE("/v1/hosts/{id}/tags/{tag}", {
                  params: { path: { id: hid, tag: tg } },
                }),
              ),
        );
        return 0;
      }
      const w = "host tags";
      const id = hostId(w, positionals(w, pos, ["host-id"])[0]);
      const api = await hostApi(ctx.io.env);
      const { tags } = await api.call(api.api.GET("/v1/hosts/{id}/tags", path(id)));
      ctx.io.stdout.write(tags.map((t: string) => `${t}\n`).join(""));
      return 0;
    },
  },
};
