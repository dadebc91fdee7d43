/**
 * A stack of undo steps for a multi-step operation (the idea of E2B's orchestrator `Cleanup`):
 * each step registers its undo right after it succeeds, so what a failure must unwind is
 * exactly what was done, in reverse order, without flags like "network up" to keep in sync.
 */
export type Undo = () => void | Promise<void>;

export interface CleanupFailure {
  readonly step: string;
  readonly error: unknown;
}

/** Some undo steps failed; every step was still attempted. */
export class CleanupError extends AggregateError {
  override readonly name = "CleanupError";

  constructor(readonly failures: readonly CleanupFailure[]) {
    super(
      failures.map((f) => f.error),
      `cleanup failed: ${failures.map((f) => `${f.step}: ${String(f.error)}`).join("; ")}`,
    );
  }
}

export class Cleanup {
  private steps: { step: string; undo: Undo }[] = [];

  /** Registers the undo of a step that has just succeeded. */
  add(step: string, undo: Undo): void {
    this.steps.push({ step, undo });
  }

  get size(): number {
    return this.steps.length;
  }

  /**
   * Runs every registered undo, last first, each one even when an earlier one failed (a failed
   * stop must not keep the network from being removed), then forgets them. Rejects with a
   * `CleanupError` listing the failed steps.
   */
  async run(): Promise<void> {
    const steps = this.steps.reverse();
    this.steps = [];
    const failures: CleanupFailure[] = [];
    for (const { step, undo } of steps) {
      try {
        await undo();
      } catch (error) {
        failures.push({ step, error });
      }
    }
    if (failures.length > 0) throw new CleanupError(failures);
  }
}
