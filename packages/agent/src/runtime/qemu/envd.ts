// The few things the qemu runtime asks of envd in the guest: "are you up" (`GET /health`) and
// running a short command as root (process.Process/Start, Connect's JSON streaming framing),
// used to set the guest clock after a restore and to flush the guest's page cache before a
// disk-only snapshot.
import { request } from "node:http";
import { RuntimeError } from "../runtime.js";
import { sleep } from "./process.js";

export const ENVD_PORT = 49983;

export function envdUrl(address: string): string {
  return `http://${address}:${ENVD_PORT}`;
}

/**
 * One HTTP request on its own connection. Not fetch(): its pool keeps connections alive, and a
 * sandbox resumed (or re-created) at the same address resets those, failing the next call.
 */
function httpRequest(
  url: string,
  options: { method: string; headers?: Record<string, string>; body?: Buffer; timeoutMs: number },
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method,
        headers: options.headers ?? {},
        agent: false,
        timeout: options.timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`timed out after ${options.timeoutMs} ms`)));
    req.on("error", reject);
    req.end(options.body);
  });
}

/**
 * Polls `GET /health` until HTTP 204. `abortCheck` is consulted between attempts (e.g. QEMU has
 * exited) and ends the wait at once with its message.
 */
export async function waitForHealth(
  baseUrl: string,
  timeoutMs: number,
  abortCheck: () => string | undefined,
): Promise<number> {
  const started = Date.now();
  let last = "";
  for (;;) {
    const aborted = abortCheck();
    if (aborted)
      throw new RuntimeError("internal", `${aborted} before envd answered (last: ${last})`);
    try {
      const res = await httpRequest(`${baseUrl}/health`, { method: "GET", timeoutMs: 2_000 });
      if (res.status === 204 || res.status === 200) return Date.now() - started;
      last = `HTTP ${res.status}`;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() - started > timeoutMs) {
      throw new RuntimeError(
        "unavailable",
        `envd at ${baseUrl} did not answer /health within ${timeoutMs} ms (last: ${last})`,
      );
    }
    await sleep(Date.now() - started < 2_000 ? 10 : 100);
  }
}

export interface GuestCommandResult {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd args` as root through envd and waits for it to end. `accessToken` is needed once the
 * sandbox has been initialised with one (POST /init).
 */
export async function runGuestCommand(
  baseUrl: string,
  cmd: string,
  args: readonly string[],
  options: { accessToken?: string; timeoutMs?: number } = {},
): Promise<GuestCommandResult> {
  const json = Buffer.from(JSON.stringify({ process: { cmd, args }, stdin: false }));
  const envelope = Buffer.alloc(5 + json.length);
  envelope.writeUInt8(0, 0);
  envelope.writeUInt32BE(json.length, 1);
  json.copy(envelope, 5);
  const headers: Record<string, string> = {
    "content-type": "application/connect+json",
    "connect-protocol-version": "1",
    authorization: `Basic ${Buffer.from("root:").toString("base64")}`,
  };
  if (options.accessToken) headers["x-access-token"] = options.accessToken;
  const res = await httpRequest(`${baseUrl}/process.Process/Start`, {
    method: "POST",
    headers,
    body: envelope,
    timeoutMs: options.timeoutMs ?? 30_000,
  });
  const body = res.body;
  if (res.status !== 200) {
    throw new RuntimeError(
      "internal",
      `envd Process/Start ${cmd}: HTTP ${res.status}: ${body.toString("utf8").slice(0, 300)}`,
    );
  }
  const result: GuestCommandResult = { exitCode: undefined, stdout: "", stderr: "" };
  let offset = 0;
  while (offset + 5 <= body.length) {
    const flags = body.readUInt8(offset);
    const length = body.readUInt32BE(offset + 1);
    const payload = JSON.parse(body.subarray(offset + 5, offset + 5 + length).toString("utf8")) as {
      event?: {
        data?: { stdout?: string; stderr?: string };
        end?: { exitCode?: number; exited?: boolean; status?: string; error?: string };
      };
      error?: { code?: string; message?: string };
    };
    offset += 5 + length;
    if (flags & 0x02) {
      if (payload.error) {
        throw new RuntimeError(
          "internal",
          `envd Process/Start ${cmd}: ${payload.error.code}: ${payload.error.message}`,
        );
      }
      continue;
    }
    const data = payload.event?.data;
    if (data?.stdout) result.stdout += Buffer.from(data.stdout, "base64").toString("utf8");
    if (data?.stderr) result.stderr += Buffer.from(data.stderr, "base64").toString("utf8");
    const end = payload.event?.end;
    if (end) result.exitCode = end.exitCode ?? (end.exited ? 0 : undefined);
  }
  return result;
}

/**
 * Sets the guest's wall clock to the host's. A restored guest wakes with the clock it had when
 * the snapshot was taken (TCG's TSC does not advance while the VM is stopped, and nothing in the
 * guest steps the clock), so without this `date` would print the template's build time.
 */
export async function syncGuestClock(
  baseUrl: string,
  accessToken: string | undefined,
): Promise<void> {
  // Sampled just before sending: the command's own latency (tens of ms under TCG) is the error.
  const now = Date.now();
  const seconds = `@${Math.floor(now / 1000)}.${String(now % 1000).padStart(3, "0")}`;
  const result = await runGuestCommand(baseUrl, "/bin/date", ["-u", "-s", seconds], {
    ...(accessToken ? { accessToken } : {}),
    timeoutMs: 15_000,
  });
  if (result.exitCode !== 0) {
    throw new RuntimeError(
      "internal",
      `setting the guest clock failed (exit ${result.exitCode}): ${result.stderr.trim()}`,
    );
  }
}
