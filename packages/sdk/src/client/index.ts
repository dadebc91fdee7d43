import { Commands, Processes } from "./commands.js";
import { type ClientOptions, type ResolvedOptions, resolveClientOptions } from "./config.js";
import { type ExecStreamHandle, type ExecStreamOptions, startExecStream } from "./exec-stream.js";
import { Files } from "./files.js";
import { Transport } from "./http.js";
import { openPty, type PtyHandlers, type PtySession, type PtyStartOptions } from "./pty.js";
import { Sandboxes } from "./sandboxes.js";
import { Templates } from "./templates.js";

/**
 * The typed client of the control plane's `/v1` API.
 *
 * ```ts
 * const nbx = new NestboxClient(); // NESTBOX_API_URL, NESTBOX_API_KEY
 * const sbx = await nbx.sandboxes.create({ template: "base" });
 * const code = await nbx.execStream(sbx.id, "ls", ["-l"], { onStdout: (b) => process.stdout.write(b) });
 * ```
 */
export class NestboxClient {
  readonly apiUrl: string;
  /** Where the API key came from (`NESTBOX_API_KEY`, a file, `option`), or undefined: none. */
  readonly apiKeySource: string | undefined;
  readonly sandboxes: Sandboxes;
  readonly commands: Commands;
  readonly processes: Processes;
  readonly files: Files;
  readonly templates: Templates;
  private readonly transport: Transport;

  constructor(opts: ClientOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    const resolved: ResolvedOptions = resolveClientOptions(opts, env);
    this.apiUrl = resolved.apiUrl;
    this.apiKeySource = resolved.apiKeySource;
    this.transport = new Transport(resolved.apiUrl, resolved.apiKey);
    this.sandboxes = new Sandboxes(this.transport);
    this.commands = new Commands(this.transport);
    this.processes = new Processes(this.transport);
    this.files = new Files(this.transport);
    this.templates = new Templates(this.transport);
  }

  /**
   * Runs `cmd args…` streaming its output to the callbacks as it is produced; resolves with
   * its exit code.
   */
  async execStream(
    id: string,
    cmd: string,
    args: string[] = [],
    opts: ExecStreamOptions = {},
  ): Promise<number> {
    const handle = await startExecStream(this.transport, id, cmd, args, opts);
    return handle.exitCode;
  }

  /** Like execStream, returning a handle (to kill the command) once it is started. */
  startExecStream(
    id: string,
    cmd: string,
    args: string[] = [],
    opts: ExecStreamOptions = {},
  ): Promise<ExecStreamHandle> {
    return startExecStream(this.transport, id, cmd, args, opts);
  }

  /** Starts an interactive terminal; resolves once it runs. */
  pty(id: string, opts: PtyStartOptions, handlers: PtyHandlers): Promise<PtySession> {
    return openPty(this.transport, id, { type: "start", ...opts }, handlers);
  }

  /** Attaches to a running terminal by its tag (output from now on; nothing is replayed). */
  ptyConnect(id: string, tag: string, handlers: PtyHandlers): Promise<PtySession> {
    return openPty(this.transport, id, { type: "connect", tag }, handlers);
  }
}

export {
  type AdminClientOptions,
  type AdminSandbox,
  type AdminSandboxFilter,
  type AdminTeam,
  type AdminTemplate,
  type AdminUser,
  NestboxAdmin,
} from "./admin.js";
export type { Commands, ExecOutput, Processes, RunOptions } from "./commands.js";
export type { ClientOptions } from "./config.js";
export { DEFAULT_API_URL, DEFAULT_NESTBOX_DIR, resolveClientOptions } from "./config.js";
export { NestboxApiError } from "./errors.js";
export type { ExecStreamHandle, ExecStreamOptions } from "./exec-stream.js";
export type { Files, UploadSource } from "./files.js";
export type { PtyHandlers, PtySession, PtySize, PtyStartOptions } from "./pty.js";
export type { ListSandboxesOptions, Sandboxes } from "./sandboxes.js";
export type { Templates } from "./templates.js";
export type * from "./types.js";
