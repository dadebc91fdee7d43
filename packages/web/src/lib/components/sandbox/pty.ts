/**
 * One terminal over `GET /v1/sandboxes/{id}/pty` (protocol: packages/server/src/api/ws-pty.ts).
 * Browsers cannot set headers on a WebSocket, so the first frame carries the access token. The
 * shell keeps running when the socket drops; we re-attach by its tag with backoff, a bounded
 * number of times, and stop retrying on answers that retrying cannot change.
 */
import { session } from "$lib/api/session.svelte";
import { b64decode, b64encode } from "./bytes";

export type PtyState =
  | "connecting"
  | "open"
  | "reconnecting"
  /** The sandbox is not running (paused, stopped): nothing to attach to until it is. */
  | "stopped"
  | "exited"
  | "failed";

export interface PtyEvents {
  output(bytes: Uint8Array): void;
  state(s: PtyState, detail: string): void;
}

const MAX_ATTEMPTS = 6;
const BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 8000;

interface ServerFrame {
  type?: string;
  tag?: string;
  data?: string;
  exit_code?: number;
  code?: string;
  message?: string;
}

const utf8 = new TextEncoder();

export class PtySocket {
  /** The server's name for the shell; set once it started, used to re-attach. */
  tag: string | null = null;
  private ws: WebSocket | null = null;
  private attempts = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** No more reconnecting: closed by us, exited, or a final error. */
  private settled = false;
  private refreshedAuth = false;
  /** The server's last complaint, shown while retrying. */
  private lastError = "";

  /** The tag came from before a page reload: if that shell is gone, start a new one quietly. */
  private restored: boolean;

  constructor(
    private readonly sandboxId: string,
    private readonly size: () => { cols: number; rows: number },
    private readonly on: PtyEvents,
    restoredTag: string | null = null,
  ) {
    this.tag = restoredTag;
    this.restored = restoredTag !== null;
  }

  get url(): string {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}/v1/sandboxes/${encodeURIComponent(this.sandboxId)}/pty`;
  }

  connect(): void {
    clearTimeout(this.timer);
    this.settled = false;
    this.on.state(this.attempts === 0 ? "connecting" : "reconnecting", this.attemptText());
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: session.token ?? "" }));
    ws.onmessage = (ev) => this.frame(ws, ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!this.settled) this.retry();
    };
  }

  /** Starts over after a final state (e.g. the sandbox runs again): re-attach, else a new shell. */
  reconnect(): void {
    this.attempts = 0;
    this.connect();
  }

  send(text: string): void {
    this.sendFrame({ type: "input", data: b64encode(utf8.encode(text)) });
  }

  resize(cols: number, rows: number): void {
    this.sendFrame({ type: "resize", cols, rows });
  }

  /** Detaches; with `kill` the shell goes too (a closed terminal tab). */
  close(kill = false): void {
    this.settled = true;
    clearTimeout(this.timer);
    if (kill) this.sendFrame({ type: "kill" });
    this.ws?.close(1000, "closed");
    this.ws = null;
  }

  private sendFrame(frame: Record<string, unknown>): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private attemptText(): string {
    return this.attempts === 0 ? "" : `attempt ${this.attempts} of ${MAX_ATTEMPTS}`;
  }

  private retry(): void {
    if (this.attempts >= MAX_ATTEMPTS) {
      this.settled = true;
      this.on.state("failed", `the connection dropped; gave up after ${MAX_ATTEMPTS} attempts`);
      return;
    }
    const wait = Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** this.attempts);
    this.attempts++;
    const why = this.lastError ? `${this.lastError}; ` : "";
    this.on.state(
      "reconnecting",
      `${why}${this.attemptText()}, in ${Math.round(wait / 100) / 10} s`,
    );
    this.timer = setTimeout(() => this.connect(), wait);
  }

  private finish(state: PtyState, detail: string): void {
    this.settled = true;
    this.on.state(state, detail);
    this.ws?.close(1000, state);
  }

  private frame(ws: WebSocket, raw: unknown): void {
    let msg: ServerFrame;
    try {
      msg = JSON.parse(String(raw)) as ServerFrame;
    } catch (err) {
      console.warn("pty: a frame that is not JSON", err);
      return;
    }
    switch (msg.type) {
      case "authenticated": {
        const { cols, rows } = this.size();
        ws.send(
          JSON.stringify(
            this.tag ? { type: "connect", tag: this.tag } : { type: "start", cols, rows },
          ),
        );
        break;
      }
      case "started": {
        const reattached = this.tag !== null;
        this.tag = msg.tag ?? this.tag;
        this.attempts = 0;
        this.refreshedAuth = false;
        this.lastError = "";
        this.restored = false;
        this.on.state("open", "");
        // The terminal may have changed size while we were away.
        if (reattached) this.resize(this.size().cols, this.size().rows);
        break;
      }
      case "output":
        if (msg.data) this.on.output(b64decode(msg.data));
        break;
      case "exit":
        this.finish("exited", `the shell exited with code ${msg.exit_code ?? "?"}`);
        break;
      case "error":
        this.error(msg);
        break;
      default:
        console.warn("pty: unknown frame", msg.type);
    }
  }

  private error(msg: ServerFrame): void {
    const text = msg.message ?? msg.code ?? "error";
    if (msg.code === "invalid_state") this.finish("stopped", text);
    else if (msg.code === "not_found" && this.restored) {
      // The server closes the socket next; the retry then starts a new shell.
      this.tag = null;
      this.restored = false;
    } else if (msg.code === "not_found" && this.tag) {
      // The shell we re-attach to is gone (e.g. the sandbox restarted): the next try starts anew.
      this.tag = null;
      this.finish("exited", "the terminal's shell is gone");
    } else if (msg.code === "not_found") this.finish("failed", text);
    else if (msg.code === "unauthorized" && !this.refreshedAuth) {
      // The access token expired: one refresh, then the normal retry picks the new one up.
      this.refreshedAuth = true;
      void session.refresh().catch((err: unknown) => console.warn("pty: refresh", err));
    } else if (msg.code === "unauthorized") this.finish("failed", text);
    else {
      this.lastError = text;
      console.warn("pty:", text);
    }
  }
}
