import { constants } from "node:os";

/** Go's `syscall.Signal.String()` texts: E2B's envd reports `status` as Go's ProcessState does. */
const GO_SIGNAL_TEXT: Record<string, string> = {
  SIGHUP: "hangup",
  SIGINT: "interrupt",
  SIGQUIT: "quit",
  SIGILL: "illegal instruction",
  SIGTRAP: "trace/breakpoint trap",
  SIGABRT: "aborted",
  SIGBUS: "bus error",
  SIGFPE: "floating point exception",
  SIGKILL: "killed",
  SIGUSR1: "user defined signal 1",
  SIGSEGV: "segmentation fault",
  SIGUSR2: "user defined signal 2",
  SIGPIPE: "broken pipe",
  SIGALRM: "alarm clock",
  SIGTERM: "terminated",
  SIGXCPU: "CPU time limit exceeded",
  SIGXFSZ: "file size limit exceeded",
};

export interface ExitStatus {
  exitCode: number;
  exited: boolean;
  status: string;
  error?: string;
}

export function signalName(signal: NodeJS.Signals | number): string {
  if (typeof signal === "string") return signal;
  const entry = Object.entries(constants.signals).find(([, n]) => n === signal);
  return entry ? entry[0] : `signal ${signal}`;
}

/** The `end` event for a process that exited with `code` or was killed by `signal`. */
export function exitStatus(
  code: number | null,
  signal: NodeJS.Signals | number | null,
): ExitStatus {
  if (signal !== null && signal !== 0) {
    const name = signalName(signal);
    const text = `signal: ${GO_SIGNAL_TEXT[name] ?? name}`;
    return { exitCode: -1, exited: false, status: text, error: text };
  }
  const c = code ?? 0;
  const text = `exit status ${c}`;
  return c === 0
    ? { exitCode: 0, exited: true, status: text }
    : { exitCode: c, exited: true, status: text, error: text };
}
