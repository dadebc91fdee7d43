/// <reference lib="dom" />
// (The functions given to page.evaluate run in the browser.)
/**
 * Keystroke-to-echo in a sandbox's terminal, two ways over the same PTY WebSocket: the
 * dashboard's xterm.js terminal in Chromium (keydown → the echoed character painted), and the
 * Nestbox SDK's `pty()` from this process (write → the echo received).
 */
import type { NestboxClient, PtySession } from "@nestbox/sdk/client";
import type { Page } from "playwright-core";

const PROMPT_TIMEOUT_MS = 60_000;

/** Opens the sandbox's page on its Terminal tab and waits for the shell's first output. */
export async function openPageTerminal(page: Page, url: string, id: string): Promise<void> {
  await page.goto(`${url}/sandboxes/${id}`);
  await page.getByRole("tab", { name: /terminal/i }).click();
  await page.locator(".xterm-helper-textarea").first().waitFor({ timeout: PROMPT_TIMEOUT_MS });
  await page.waitForFunction(
    () => (document.querySelector(".xterm-rows")?.textContent ?? "").trim().length > 0,
    null,
    { timeout: PROMPT_TIMEOUT_MS },
  );
  await page.locator(".xterm-helper-textarea").first().focus();
}

/**
 * One key typed into the page's terminal → its rows changed with the echo, in ms. The watch is
 * set up and confirmed before the key is sent: an evaluate and a key event travel different
 * paths in Chromium, so a key sent alongside could arrive first and go unseen.
 */
export async function pageKeystroke(page: Page, key: string): Promise<number> {
  // A string, not a function: tsx would wrap named inner functions in a `__name` helper that
  // does not exist in the page.
  await page.evaluate(`(() => {
    const rows = document.querySelector(".xterm-rows");
    if (!rows) throw new Error("no .xterm-rows (is the DOM renderer in use?)");
    window.__nbxEcho = new Promise((resolve, reject) => {
      let t0 = 0;
      document.addEventListener("keydown", (e) => (t0 = e.timeStamp), { once: true, capture: true });
      const obs = new MutationObserver(() => {
        if (!t0) return;
        obs.disconnect();
        // xterm.js changes its rows inside the animation frame that paints them: the time of
        // the change is the paint's frame (waiting for the next frame would add one more).
        resolve(performance.now() - t0);
      });
      obs.observe(rows, { subtree: true, childList: true, characterData: true });
      setTimeout(() => reject(new Error("no echo within 10 s")), 10_000);
    });
  })()`);
  await page.keyboard.press(key);
  return page.evaluate<number>("window.__nbxEcho").catch(async (err: unknown) => {
    const state = await page.evaluate<string>(
      `JSON.stringify({ focused: document.activeElement?.className, text: (document.querySelector(".xterm-rows")?.textContent ?? "").slice(-300) })`,
    );
    throw new Error(`${String(err)}; page: ${state}`);
  });
}

export interface SdkTerminal {
  keystroke(key: string): Promise<number>;
  /** Input that is not timed (and may not echo). */
  send(data: string): Promise<void>;
  close(): void;
}

/** A terminal through the SDK, waited on until the shell has printed something. */
export async function openSdkTerminal(client: NestboxClient, id: string): Promise<SdkTerminal> {
  let waiter: ((data: Buffer) => void) | undefined;
  let seen = 0;
  const session: PtySession = await client.pty(
    id,
    { cols: 120, rows: 30 },
    {
      onData: (d) => {
        seen += d.length;
        waiter?.(d);
      },
    },
  );
  const deadline = Date.now() + PROMPT_TIMEOUT_MS;
  while (seen === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (seen === 0) throw new Error("the SDK terminal printed nothing");
  // Let the prompt settle so no late output counts as an echo.
  await new Promise((r) => setTimeout(r, 300));
  return {
    async keystroke(key: string) {
      const echoed = new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no echo within 10 s")), 10_000);
        waiter = (d) => {
          if (!d.toString("latin1").includes(key)) return;
          clearTimeout(timer);
          waiter = undefined;
          resolve(performance.now());
        };
      });
      const t0 = performance.now();
      await session.write(key);
      return (await echoed) - t0;
    },
    send: (data) => session.write(data),
    close: () => session.close(),
  };
}

/** Clears the shell's input line between runs (Ctrl-U), so lines never wrap. */
export async function clearLines(page: Page, sdk: SdkTerminal): Promise<void> {
  await page.keyboard.press("Control+U");
  await sdk.send("\u0015");
  await new Promise((r) => setTimeout(r, 200));
}
