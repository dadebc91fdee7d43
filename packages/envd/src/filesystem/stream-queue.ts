/**
 * A push-to-pull bridge for server streams: producers push, the RPC's async generator pulls.
 * Bounded: a consumer that falls more than `limit` items behind gets `overflow` as its error
 * rather than envd growing without bound.
 */
export class StreamQueue<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private done = false;
  private error: Error | undefined;

  constructor(
    private readonly limit: number,
    private readonly overflow: () => Error,
  ) {}

  push(item: T): void {
    if (this.done) return;
    if (this.items.length >= this.limit) {
      this.fail(this.overflow());
      return;
    }
    this.items.push(item);
    this.notify();
  }

  fail(err: Error): void {
    if (this.done) return;
    this.error = err;
    this.done = true;
    this.notify();
  }

  end(): void {
    this.done = true;
    this.notify();
  }

  /** Yields items until `end`, `fail` (rethrown) or `signal` aborts (a clean end). */
  async *drain(signal: AbortSignal): AsyncGenerator<T> {
    const onAbort = () => this.end();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        while (this.items.length > 0) yield this.items.shift() as T;
        if (this.error) throw this.error;
        if (this.done || signal.aborted) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
