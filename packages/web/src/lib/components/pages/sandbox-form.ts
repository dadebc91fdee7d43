/**
 * The new-sandbox form's fields and their checks. The limits restate the server's CreateSandbox
 * schema (packages/server/src/api/routes/sandboxes.ts) so a mistake is named next to its field
 * before a request is sent; the server still checks everything and its message is shown too.
 */
export interface KeyValue {
  key: string;
  value: string;
}

export interface SandboxForm {
  template: string;
  vcpus: string;
  memoryMb: string;
  diskMb: string;
  timeoutSec: string;
  metadata: KeyValue[];
  env: KeyValue[];
  internet: boolean;
}

export interface FormErrors {
  fields: Partial<Record<"template" | "vcpus" | "memoryMb" | "diskMb" | "timeoutSec", string>>;
  metadata: Record<number, string>;
  env: Record<number, string>;
}

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** An optional integer field: undefined when blank, else the number or a message. */
function intField(
  raw: string,
  min: number,
  max: number,
  unit: string,
): number | string | undefined {
  const t = raw.trim();
  if (t === "") return undefined;
  if (!/^\d+$/.test(t)) return "Enter a whole number";
  const n = Number(t);
  if (n < min || n > max) return `Must be between ${min} and ${max}${unit}`;
  return n;
}

function mapOf(
  rows: KeyValue[],
  maxEntries: number,
  maxValue: number,
  errors: Record<number, string>,
  checkKey?: (k: string) => string | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  rows.forEach((r, i) => {
    const key = r.key.trim();
    if (key === "" && r.value === "") return;
    if (key === "") errors[i] = "A key is needed";
    else if (key.length > 256) errors[i] = "Keys are at most 256 characters";
    else if (key in out) errors[i] = `“${key}” is given twice`;
    else if (r.value.length > maxValue) errors[i] = `Values are at most ${maxValue} characters`;
    else {
      const bad = checkKey?.(key);
      if (bad) errors[i] = bad;
      else out[key] = r.value;
    }
  });
  if (Object.keys(out).length > maxEntries)
    errors[rows.length - 1] = `At most ${maxEntries} entries`;
  return out;
}

export interface CreateBody {
  template: string;
  vcpus?: number;
  memory_mb?: number;
  disk_size_mb?: number;
  timeout_sec?: number;
  metadata?: Record<string, string>;
  env_vars?: Record<string, string>;
  allow_internet_access: boolean;
}

/** The request body, or the messages to show (by field and by row). */
export function validate(f: SandboxForm): { body: CreateBody } | { errors: FormErrors } {
  const errors: FormErrors = { fields: {}, metadata: {}, env: {} };
  if (!TEMPLATE_NAME_RE.test(f.template)) errors.fields.template = "Choose a template";
  const fields = {
    vcpus: intField(f.vcpus, 1, 32, ""),
    memoryMb: intField(f.memoryMb, 128, 262144, " MB"),
    diskMb: intField(f.diskMb, 1024, 1048576, " MB"),
    timeoutSec: intField(f.timeoutSec, 0, 86400 * 30, " s"),
  };
  for (const [k, v] of Object.entries(fields))
    if (typeof v === "string") errors.fields[k as keyof typeof fields] = v;
  const metadata = mapOf(f.metadata, 64, 1024, errors.metadata);
  const env = mapOf(f.env, 256, 32768, errors.env, (k) =>
    ENV_NAME_RE.test(k) ? undefined : "Names are letters, digits and _, not starting with a digit",
  );
  const failed =
    Object.keys(errors.fields).length +
    Object.keys(errors.metadata).length +
    Object.keys(errors.env).length;
  if (failed) return { errors };
  const num = (v: number | string | undefined) => (typeof v === "number" ? v : undefined);
  return {
    body: {
      template: f.template,
      vcpus: num(fields.vcpus),
      memory_mb: num(fields.memoryMb),
      disk_size_mb: num(fields.diskMb),
      timeout_sec: num(fields.timeoutSec),
      ...(Object.keys(metadata).length ? { metadata } : {}),
      ...(Object.keys(env).length ? { env_vars: env } : {}),
      allow_internet_access: f.internet,
    },
  };
}
