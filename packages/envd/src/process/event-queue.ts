/**
 * A single-consumer queue that one RPC stream reads from while a process pushes into it.
 * It counts queued bytes so the producer can stop reading the child's output (backpressure)
 * instead of buffering without bound when a client reads slowly.
 */
export class EventQueue<T> {
  private readonly items: { item: T; bytes: number }[] = [];
  private waiter: (() => void) | undefined;
  private closed = false;
  bytes = 0;

  constructor(private readonly onDrain: () => void = () => {}) {}

  push(item: T, bytes = 0): void {
    if (this.closed) return;
    this.items.push({ item, bytes });
    this.bytes += bytes;
    this.wake();
  }

  /** No more items after those already queued. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  async *drain(signal: AbortSignal): AsyncGenerator<T> {
    const onAbort = () => this.wake();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        const next = this.items.shift();
        if (next) {
          this.bytes -= next.bytes;
          this.onDrain();
          yield next.item;
          continue;
        }
        if (this.closed) return;
        await new Promise<void>((resolve) => {
          this.waiter = resolve;
        });
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }
}
