import { NestboxAdmin } from "../client/admin.js";
import type { SandboxStatus } from "../client/index.js";
import { int, parse, positionals, STATUSES, sandboxId, TEMPLATE_NAME_RE } from "./args.js";
import { type CommandContext, type Subcommand, UsageError } from "./command.js";
import { bytes, json, seconds, table } from "./format.js";

/**
 * `nestbox admin <teams|users|templates|sandboxes> [action]`: the platform-admin API. It takes
 * a user session, never an API key (`userCredentials` in client/user-login.ts, shared with
 * `nestbox host`).
 */

export const ADMIN_AUTH_HELP = `Admin commands log in as a platform admin: NESTBOX_TOKEN (an access token), else
NESTBOX_EMAIL (default admin@localhost) with NESTBOX_PASSWORD (default for admin@localhost: the
file $NESTBOX_DIR/admin-password that 'nestbox up' writes). API keys are never admin credentials.`;

const TEAM_ID_RE = /^team_[a-z0-9]{20}$/;
const USER_ID_RE = /^usr_[a-z0-9]{20}$/;

const PAGING = {
  page: { type: "string" },
  "per-page": { type: "string" },
  json: { type: "boolean" },
} as const;

const connect = (ctx: CommandContext) => NestboxAdmin.connect({}, ctx.io.env);

function id(where: string, re: RegExp, what: string, value: string | undefined): string {
  if (!value || !re.test(value)) throw new UsageError(`${where}: '${value}' is not a ${what} id`);
  return value;
}

/** The action (first positional; `list` when there is none) and the rest. */
function action(args: string[], known: string[], group: string): [string, string[]] {
  const [first, ...rest] = args;
  if (first === undefined || first.startsWith("-")) return ["list", args];
  if (!known.includes(first))
    throw new UsageError(`admin ${group}: unknown action '${first}'; one of: ${known.join(", ")}`);
  return [first, rest];
}

function paging(where: string, values: { page?: string; "per-page"?: string }) {
  return {
    page: int(where, "--page", values.page, 1, 1_000_000),
    perPage: int(where, "--per-page", values["per-page"], 1, 200),
  };
}

const pageLine = (p: { page: number; total_pages: number; total: number }, what: string) =>
  `page ${p.page} of ${Math.max(p.total_pages, 1)} (${p.total} ${what})\n`;

export const ADMIN_COMMANDS: Record<string, Subcommand> = {
  teams: {
    synopsis: [
      "teams [list] [--page N] [--per-page N] [--json]",
      "teams byoc <team-id>",
      "teams delete <team-id>",
    ],
    usage: `Usage: nestbox admin teams [list] [--page N] [--per-page N] [--json]
       nestbox admin teams byoc <team-id>
       nestbox admin teams delete <team-id>

list    every team, live ones first, newest first (50 a page by default, at most 200)
byoc    makes the team bring-your-own-compute: its sandboxes then run only on its own hosts.
        One way: it cannot be turned off.
delete  deletes the team (not the platform team), destroying its live sandboxes; its API keys
        stop working and its members lose access at once.

${ADMIN_AUTH_HELP}`,
    async run(args, ctx) {
      const [act, rest] = action(args, ["list", "byoc", "delete"], "teams");
      const w = `admin teams ${act}`;
      if (act === "list") {
        const { values, positionals: pos } = parse(w, rest, PAGING);
        positionals(w, pos, []);
        const page = await (await connect(ctx)).listTeams(paging(w, values));
        if (values.json) {
          ctx.io.stdout.write(json(page));
          return 0;
        }
        ctx.io.stdout.write(
          table([
            ["ID", "NAME", "OWNER", "MEMBERS", "SANDBOXES", "BYOC", "CREATED", "DELETED"],
            ...page.teams.map((t) => [
              t.id,
              t.is_platform ? `${t.name} (platform)` : t.name,
              t.owner_email ?? "-",
              String(t.member_count),
              String(t.active_sandbox_count),
              t.is_byoc ? "yes" : "no",
              seconds(t.created_at),
              t.deleted_at ? seconds(t.deleted_at) : "-",
            ]),
          ]),
        );
        ctx.io.stdout.write(pageLine(page, "teams"));
        return 0;
      }
      const [teamId] = positionals(w, parse(w, rest, {}).positionals, ["team-id"]);
      const team = id(w, TEAM_ID_RE, "team", teamId);
      const admin = await connect(ctx);
      if (act === "byoc") {
        await admin.enableByoc(team);
        ctx.io.stdout.write(`team ${team} is BYOC\n`);
      } else {
        await admin.deleteTeam(team);
        ctx.io.stdout.write(`team ${team} deleted\n`);
      }
      return 0;
    },
  },

  users: {
    synopsis: [
      "users [list] [--page N] [--per-page N] [--json]",
      "users activate <user-id>",
      "users deactivate <user-id>",
    ],
    usage: `Usage: nestbox admin users [list] [--page N] [--per-page N] [--json]
       nestbox admin users activate <user-id>
       nestbox admin users deactivate <user-id>

list        every account, oldest first, with the number of teams joined and owned
deactivate  shuts the account out, revokes every API key it created, ends its browser
            sessions and destroys the live sandboxes of the teams it solely owns (not your own
            account)
activate    lets it log in again (revoked keys stay revoked)

${ADMIN_AUTH_HELP}`,
    async run(args, ctx) {
      const [act, rest] = action(args, ["list", "activate", "deactivate"], "users");
      const w = `admin users ${act}`;
      if (act === "list") {
        const { values, positionals: pos } = parse(w, rest, PAGING);
        positionals(w, pos, []);
        const page = await (await connect(ctx)).listUsers(paging(w, values));
        if (values.json) {
          ctx.io.stdout.write(json(page));
          return 0;
        }
        ctx.io.stdout.write(
          table([
            ["ID", "EMAIL", "NAME", "STATUS", "ADMIN", "TEAMS", "OWNED", "CREATED"],
            ...page.users.map((u) => [
              u.id,
              u.email,
              u.name,
              u.status,
              u.is_admin ? "yes" : "no",
              String(u.teams_joined),
              String(u.teams_owned),
              seconds(u.created_at),
            ]),
          ]),
        );
        ctx.io.stdout.write(pageLine(page, "users"));
        return 0;
      }
      const [userId] = positionals(w, parse(w, rest, {}).positionals, ["user-id"]);
      const user = await (await connect(ctx)).setUserActive(
        id(w, USER_ID_RE, "user", userId),
        act === "activate",
      );
      ctx.io.stdout.write(`${user.email}: ${user.status}\n`);
      return 0;
    },
  },

  templates: {
    synopsis: ["templates [list] [--json]", "templates delete <name>"],
    usage: `Usage: nestbox admin templates [list] [--json]
       nestbox admin templates delete <name>

list    every template of every team, newest first
delete  deletes a platform template from every online host (not 'base'; refused while live
        sandboxes use it)

${ADMIN_AUTH_HELP}`,
    async run(args, ctx) {
      const [act, rest] = action(args, ["list", "delete"], "templates");
      const w = `admin templates ${act}`;
      if (act === "list") {
        const { values, positionals: pos } = parse(w, rest, { json: { type: "boolean" } });
        positionals(w, pos, []);
        const templates = await (await connect(ctx)).listTemplates();
        if (values.json) {
          ctx.io.stdout.write(json(templates));
          return 0;
        }
        ctx.io.stdout.write(
          table([
            ["NAME", "KIND", "TEAM", "VCPUS", "MEMORY", "SIZE", "HOST", "CREATED"],
            ...templates.map((t) => [
              t.name,
              t.kind,
              t.is_platform ? "platform" : t.team_name,
              t.vcpus === null ? "-" : String(t.vcpus),
              t.memory_mb === null ? "-" : `${t.memory_mb} MiB`,
              bytes(t.size_bytes),
              t.host_id ?? "-",
              seconds(t.created_at),
            ]),
          ]),
        );
        return 0;
      }
      const [name] = positionals(w, parse(w, rest, {}).positionals, ["name"]);
      if (!TEMPLATE_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a template name`);
      await (await connect(ctx)).deleteTemplate(name as string);
      ctx.io.stdout.write(`template ${name} deleted\n`);
      return 0;
    },
  },

  sandboxes: {
    synopsis: [
      "sandboxes [list] [--team ID] [--host ID] [--status S] [--page N] [--per-page N] [--json]",
      "sandboxes snapshot <sandbox-id> <name>",
    ],
    usage: `Usage: nestbox admin sandboxes [list] [--team ID] [--host ID] [--status S]
                                [--page N] [--per-page N] [--json]
       nestbox admin sandboxes snapshot <sandbox-id> <name>

list      sandboxes of every team, newest first. Statuses: ${STATUSES.join(", ")}.
snapshot  turns any team's running or paused sandbox into the platform template <name>,
          usable by every team (the sandbox is destroyed). A platform template of that name
          is replaced.

${ADMIN_AUTH_HELP}`,
    async run(args, ctx) {
      const [act, rest] = action(args, ["list", "snapshot"], "sandboxes");
      const w = `admin sandboxes ${act}`;
      if (act === "list") {
        const { values, positionals: pos } = parse(w, rest, {
          ...PAGING,
          team: { type: "string" },
          host: { type: "string" },
          status: { type: "string" },
        });
        positionals(w, pos, []);
        if (values.status !== undefined && !(STATUSES as readonly string[]).includes(values.status))
          throw new UsageError(
            `${w}: unknown status '${values.status}' (one of ${STATUSES.join(", ")})`,
          );
        const page = await (await connect(ctx)).listSandboxes({
          ...paging(w, values),
          teamId: values.team === undefined ? undefined : id(w, TEAM_ID_RE, "team", values.team),
          hostId: values.host,
          status: values.status as SandboxStatus | undefined,
        });
        if (values.json) {
          ctx.io.stdout.write(json(page));
          return 0;
        }
        ctx.io.stdout.write(
          table([
            ["ID", "TEAM", "STATUS", "TEMPLATE", "HOST", "CREATED"],
            ...page.sandboxes.map((s) => [
              s.id,
              s.team_name,
              s.status,
              s.template,
              s.host_id ?? "-",
              seconds(s.created_at),
            ]),
          ]),
        );
        ctx.io.stdout.write(pageLine(page, "sandboxes"));
        return 0;
      }
      const [sid, name] = positionals(w, parse(w, rest, {}).positionals, ["sandbox-id", "name"]);
      if (!TEMPLATE_NAME_RE.test(name as string))
        throw new UsageError(`${w}: '${name}' is not a template name (a-z, 0-9, . _ -)`);
      const t = await (await connect(ctx)).snapshotSandbox(sandboxId(w, sid), name as string);
      ctx.io.stdout.write(`${t.name} (${t.id})\n`);
      return 0;
    },
  },
};
