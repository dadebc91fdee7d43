/**
 * Runs `fn` every `ms` while the tab is visible (and once more when it becomes visible again);
 * a run never overlaps the previous one. Returns the stop function, for onMount's cleanup.
 */
export function poll(fn: () => Promise<void>, ms: number): () => void {
  let running = false;
  const tick = async () => {
    if (running || document.hidden) return;
    running = true;
    try {
      await fn();
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick(), ms);
  const onVisible = () => {
    if (!document.hidden) void tick();
  };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}
