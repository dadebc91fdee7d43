import { Code, ConnectError } from "@connectrpc/connect";
import type { ManagedProcess } from "./managed-process.js";

export type Selector =
  | { case: "pid"; value: number }
  | { case: "tag"; value: string }
  | { case: undefined; value?: undefined };

/** The processes envd started and that have not ended yet, by pid. */
export class ProcessRegistry {
  private readonly byPid = new Map<number, ManagedProcess>();

  add(p: ManagedProcess): void {
    this.byPid.set(p.pid, p);
    p.done.then(
      () => this.byPid.delete(p.pid),
      () => this.byPid.delete(p.pid),
    );
  }

  list(): ManagedProcess[] {
    return [...this.byPid.values()];
  }

  get(selector: Selector | undefined): ManagedProcess {
    if (!selector || selector.case === undefined) {
      throw new ConnectError("process selector (pid or tag) is required", Code.InvalidArgument);
    }
    if (selector.case === "pid") {
      const p = this.byPid.get(selector.value);
      if (!p) throw new ConnectError(`process with pid ${selector.value} not found`, Code.NotFound);
      return p;
    }
    for (const p of this.byPid.values()) if (p.tag === selector.value) return p;
    throw new ConnectError(`process with tag '${selector.value}' not found`, Code.NotFound);
  }

  /** Kills every tracked process; used on envd shutdown so nothing is orphaned. */
  killAll(): void {
    for (const p of this.byPid.values()) p.signal("SIGKILL");
  }
}
