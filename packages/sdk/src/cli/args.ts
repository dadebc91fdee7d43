import { type ParseArgsConfig, parseArgs } from "node:util";
import type { SandboxStatus } from "../client/index.js";
import { UsageError } from "./command.js";

/**
 * Argument parsing and validation for the client commands. Pure: each helper takes `where`
 * (the subcommand, e.g. "sandbox create") to name in its UsageError.
 */

import { SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "@nestbox/wire";

export { SANDBOX_ID_RE, TEMPLATE_NAME_RE };
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const STATUSES: readonly SandboxStatus[] = [
  "pending",
  "running",
  "paused",
  "stopped",
  "error",
  "missing",
];

export type ParseOptions = NonNullable<ParseArgsConfig["options"]>;
export type Parsed<O extends ParseOptions> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>
>;

/** node:util parseArgs (strict, positionals allowed), its errors as UsageErrors. */
export function parse<O extends ParseOptions>(
  where: string,
  args: string[],
  options: O,
): Parsed<O> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    if (err instanceof Error && (err as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS"))
      throw new UsageError(`${where}: ${err.message}`);
    throw err;
  }
}

/** Exactly the positionals `names`, or a UsageError naming the first missing or extra one. */
export function positionals(where: string, got: string[], names: string[]): string[] {
  if (got.length < names.length) throw new UsageError(`${where}: missing <${names[got.length]}>`);
  if (got.length > names.length)
    throw new UsageError(`${where}: unexpected argument '${got[names.length]}'`);
  return got;
}

/** The arguments before the first `--`, and those after it (undefined: there is no `--`). */
export function splitAtDash(args: string[]): { before: string[]; after: string[] | undefined } {
  const dash = args.indexOf("--");
  return dash < 0
    ? { before: args, after: undefined }
    : { before: args.slice(0, dash), after: args.slice(dash + 1) };
}

export function sandboxId(where: string, id: string | undefined): string {
  if (!id) throw new UsageError(`${where}: missing <id>`);
  if (!SANDBOX_ID_RE.test(id))
    throw new UsageError(`${where}: '${id}' is not a sandbox id (20 characters a-z, 0-9)`);
  return id;
}

/** A decimal integer flag within [min, max]; undefined when the flag was not given. */
export function int(
  where: string,
  flag: string,
  value: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max)
    throw new UsageError(
      `${where}: ${flag} must be an integer from ${min} to ${max}, got '${value}'`,
    );
  return n;
}

/** Repeated KEY=VALUE flags as a record (the value may hold '='); undefined when none. */
export function pairs(
  where: string,
  flag: string,
  values: string[] | undefined,
  keyRe?: RegExp,
): Record<string, string> | undefined {
  if (!values?.length) return undefined;
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    const key = eq > 0 ? v.slice(0, eq) : "";
    if (!key || (keyRe && !keyRe.test(key)))
      throw new UsageError(
        `${where}: ${flag} takes KEY=VALUE${keyRe ? " (KEY a variable name)" : ""}, got '${v}'`,
      );
    out[key] = v.slice(eq + 1);
  }
  return out;
}

export function absolute(where: string, what: string, p: string): string {
  if (!p.startsWith("/"))
    throw new UsageError(`${where}: ${what} must be an absolute path, got '${p}'`);
  return p;
}

/** `--state running,paused`: a comma-separated list of sandbox statuses. */
export function states(where: string, value: string | undefined): SandboxStatus[] | undefined {
  return value?.split(",").map((s) => {
    if (!(STATUSES as readonly string[]).includes(s))
      throw new UsageError(`${where}: unknown state '${s}' (one of ${STATUSES.join(", ")})`);
    return s as SandboxStatus;
  });
}

/** The two sides of `sandbox cp`: exactly one of them is `<id>:<remote path>`. */
export type CopyDirection =
  | { kind: "upload"; local: string; id: string; remote: string }
  | { kind: "download"; id: string; remote: string; local: string };

const REMOTE_RE = /^([a-z0-9]{20}):(.*)$/;

export function copyDirection(where: string, from: string, to: string): CopyDirection {
  const src = REMOTE_RE.exec(from);
  const dst = REMOTE_RE.exec(to);
  if (src && dst) throw new UsageError(`${where}: copying between two sandboxes is not supported`);
  if (dst) return { kind: "upload", local: from, id: dst[1] as string, remote: dst[2] as string };
  if (src) return { kind: "download", id: src[1] as string, remote: src[2] as string, local: to };
  throw new UsageError(`${where}: one side must be <id>:<remote path> (neither is)`);
}
