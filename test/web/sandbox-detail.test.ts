/**
 * The sandbox detail page against a real host agent (namespace runtime): the terminal echoes
 * what is typed, a file dropped on the list lands in the sandbox (the terminal `cat`s it),
 * pause and resume show without a reload and the terminal works again afterwards, the metrics
 * chart draws samples, kill goes back to the list, and another team sees "Sandbox not found".
 * One flow in order: each step needs the sandbox the previous one left behind.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { seriousA11yViolations, startWebStack, type WebStack } from "./support/browser-fixture.js";

const WAIT = { timeout: 60_000 };

describe("sandbox detail page", () => {
  let stack: WebStack;
  let id = "";
  let token = "";
  const email = `ada-${Date.now()}@example.com`;
  const password = "correct horse battery";
  const content = `dropped-${randomBytes(6).toString("hex")}`;

  const signUp = async (name: string, mail: string) => {
    const { page, url } = stack;
    await page.goto(`${url}/signup`);
    await page.getByLabel("Name").fill(name);
    await page.getByLabel("E-mail").fill(mail);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign up" }).click();
    await page.waitForURL(`${url}/`);
    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "Sandboxes" })
      .click();
    await page.waitForURL(`${url}/sandboxes`);
  };

  /** The terminal's visible rows (xterm's DOM renderer). */
  const termText = () =>
    stack.page.evaluate<string>(
      '(() => [...document.querySelectorAll("#panel-terminal .xterm-rows")].map((r) => r.textContent).join("\\n"))()',
    );
  const waitForTerm = (re: RegExp, count = 1) =>
    stack.page.waitForFunction(
      `(() => { const t = [...document.querySelectorAll("#panel-terminal .xterm-rows")].map((r) => r.textContent).join("\\n"); return (t.match(new RegExp(${JSON.stringify(re.source)}, "g")) || []).length >= ${count}; })()`,
      null,
      WAIT,
    );
  const tab = (name: string) => stack.page.getByRole("tab", { name, exact: true });
  const typeInTerminal = async (line: string) => {
    const input = stack.page.locator("#panel-terminal .xterm-helper-textarea").first();
    await input.focus();
    await stack.page.keyboard.type(line);
    await stack.page.keyboard.press("Enter");
  };
  const status = () => stack.page.getByTestId("sandbox-status");
  /** After a full page load the cookie session brings the page back signed in. */
  const landsSignedIn = async (landed: () => ReturnType<WebStack["page"]["getByRole"]>) => {
    await landed().waitFor(WAIT);
    assert.equal(await stack.page.getByRole("button", { name: "Log in" }).count(), 0);
  };

  before(async () => {
    stack = await startWebStack({
      agent: { runtime: "namespace", instance: "s", slots: "8000-8049" },
    });
    // Keeps the page's terminal sockets reachable, so a test can drop one as a network would.
    await stack.context.addInitScript(
      '(() => { const W = window.WebSocket; window.__pty = []; window.WebSocket = class extends W { constructor(...a) { super(...a); if (String(a[0]).endsWith("/pty")) window.__pty.push(this); } }; })()',
    );
    await signUp("Ada", email);
    // The session token is in the page's memory only: log in from here for the API calls.
    const login = await fetch(`${stack.url}/v1/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
    assert.equal(login.status, 200);
    ({ token } = (await login.json()) as { token: string });
    // A user's way in: "New sandbox" on the list, a real agent starts it.
    const { page } = stack;
    await page.getByRole("button", { name: "New sandbox" }).click();
    const dialog = page.getByRole("dialog", { name: "New sandbox" });
    await dialog.getByLabel("Timeout (s)").fill("1800");
    await dialog.getByRole("button", { name: "Add metadata" }).click();
    await dialog.getByLabel("Metadata 1 key").fill("app");
    await dialog.getByLabel("Metadata 1 value").fill("detail");
    const createdRes = page.waitForResponse(
      (r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/v1/sandboxes",
      WAIT,
    );
    await dialog.getByRole("button", { name: "Create sandbox" }).click();
    const res = await createdRes;
    const body = (await res.json()) as { id: string; status: string; timeout_sec: number };
    assert.equal(res.status(), 201, JSON.stringify(body));
    assert.equal(body.timeout_sec, 1800);
    // Blank fields are left to the server's defaults, not sent as zeros.
    assert.deepEqual(res.request().postDataJSON(), {
      template: "base",
      timeout_sec: 1800,
      metadata: { app: "detail" },
      allow_internet_access: true,
    });
    id = body.id;
    await dialog.waitFor({ state: "hidden", ...WAIT });
    await page
      .getByRole("row", { name: new RegExp(id) })
      .getByText("running")
      .waitFor(WAIT);
  });
  after(async () => {
    await stack?.close();
  });

  test("overview shows the sandbox and how to connect", async () => {
    const { page, url } = stack;
    // From the list: the id links to the page.
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.getByRole("link", { name: id }).click();
    await page.waitForURL(`${url}/sandboxes/${id}`);
    await page.getByRole("heading", { name: id }).waitFor();
    assert.equal(((await status().textContent()) ?? "").trim(), "running");
    assert.equal(await tab("Overview").getAttribute("aria-selected"), "true");
    const text = (await page.locator("#panel-overview").textContent()) ?? "";
    assert.match(text, /app=detail/);
    assert.match(text, new RegExp(`Sandbox\\.connect\\("${id}"\\)`));
    assert.match(text, new RegExp(`E2B_API_URL=${url.replace(/[.]/g, "\\.")}`));
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-overview");
  });

  test("terminal: typed input is echoed by the shell; the tab is in the URL", async () => {
    const { page } = stack;
    await tab("Terminal").click();
    await page.waitForURL(/tab=terminal/);
    await page.getByTestId("terminal-state").filter({ hasText: "Connected" }).waitFor(WAIT);
    await page.waitForFunction(
      '(document.querySelector("#panel-terminal .xterm-rows")?.textContent ?? "").trim().length > 0',
      null,
      WAIT,
    );
    await typeInTerminal("echo pid-$$");
    await waitForTerm(/pid-\d+/);
    const shellPid = /pid-(\d+)/.exec(await termText())?.[1];
    await typeInTerminal("echo hello-$RANDOM");
    // The echoed command line has "$RANDOM"; only the shell's output has digits there.
    await waitForTerm(/hello-\d+/);
    assert.match(await termText(), /hello-\d+/);
    // A reload keeps the tab (its state is in the URL).
    await page.reload();
    await landsSignedIn(() => tab("Terminal"));
    assert.match(page.url(), /tab=terminal/);
    await page.getByTestId("terminal-state").filter({ hasText: "Connected" }).waitFor(WAIT);
    assert.equal(await tab("Terminal").getAttribute("aria-selected"), "true");
    // The same shell, re-attached by its tag (kept in sessionStorage), not a new one.
    await typeInTerminal("echo pid-$$");
    await waitForTerm(/pid-\d+/);
    assert.equal(/pid-(\d+)/.exec(await termText())?.[1], shellPid);

    // The socket drops: the page says so, re-attaches by tag, and it is still the same shell.
    const during = await page.evaluate<string>(
      '(async () => { for (const ws of window.__pty) ws.close(); await new Promise((r) => setTimeout(r, 150)); return document.querySelector("[data-testid=terminal-state]").textContent; })()',
    );
    assert.match(during, /Reconnecting/);
    await page.getByTestId("terminal-state").filter({ hasText: "Connected" }).waitFor(WAIT);
    await typeInTerminal("echo again-$$");
    await waitForTerm(/again-\d+/);
    assert.equal(/again-(\d+)/.exec(await termText())?.[1], shellPid);
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-terminal", { fullPage: false });
  });

  test("files: a dropped file is uploaded, listed, previewed and readable in the shell", async () => {
    const { page } = stack;
    await tab("Files").click();
    const drop = page.getByTestId("file-drop");
    await drop.locator("table").waitFor(WAIT);
    const dataTransfer = await page.evaluateHandle(
      `(() => { const dt = new DataTransfer(); dt.items.add(new File([${JSON.stringify(`${content}\n`)}], "dropped.txt", { type: "text/plain" })); return dt; })()`,
    );
    await drop.dispatchEvent("drop", { dataTransfer });
    const entry = drop.getByRole("button", { name: "dropped.txt", exact: true });
    await entry.waitFor(WAIT);
    await entry.click();
    const preview = page.getByTestId("preview-text");
    await preview.waitFor(WAIT);
    assert.equal(((await preview.textContent()) ?? "").trim(), content);
    const saved = page.waitForEvent("download", WAIT);
    await page.getByRole("button", { name: "Download dropped.txt" }).click();
    const file = await saved;
    assert.equal(file.suggestedFilename(), "dropped.txt");
    assert.equal(readFileSync((await file.path()) ?? "", "utf8"), `${content}\n`);
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-files");

    await tab("Terminal").click();
    await typeInTerminal("cat ~/dropped.txt");
    await waitForTerm(new RegExp(content));
  });

  test("terminal tabs: a second shell opens, and closing it ends it", async () => {
    const { page } = stack;
    const shells = async () => {
      const res = await fetch(`${stack.url}/v1/sandboxes/${id}/processes`, {
        headers: { Authorization: `Bearer ${token}` },
      });
      const { processes } = (await res.json()) as { processes: { tag: string | null }[] };
      return processes.filter((p) => p.tag?.startsWith("pty-")).length;
    };
    const before = await shells();
    await tab("Terminal").click();
    await page.getByRole("button", { name: "New terminal" }).click();
    assert.equal(
      await page
        .getByRole("button", { name: "Terminal 2", exact: true })
        .getAttribute("aria-pressed"),
      "true",
    );
    await page
      .locator("#panel-terminal [data-testid=terminal-state]", { hasText: "Connected" })
      .nth(1)
      .waitFor(WAIT);
    assert.equal(await shells(), before + 1);
    await page.getByRole("button", { name: "Close Terminal 2" }).click();
    assert.equal(await page.getByRole("button", { name: "Terminal 2", exact: true }).count(), 0);
    assert.equal(
      await page
        .getByRole("button", { name: "Terminal 1", exact: true })
        .getAttribute("aria-pressed"),
      "true",
    );
    const deadline = Date.now() + 30_000;
    while ((await shells()) > before && Date.now() < deadline) await sleep(200);
    assert.equal(await shells(), before);
  });

  test("files: new folder, binary preview, rename and delete", async () => {
    const { page } = stack;
    await tab("Files").click();
    const drop = page.getByTestId("file-drop");
    await page.getByRole("button", { name: "New folder" }).click();
    await page.getByLabel("New folder name").fill("docs");
    await page.getByRole("button", { name: "Create" }).click();
    await drop.getByRole("button", { name: "docs/", exact: true }).click();
    await page.getByText("This folder is empty").waitFor(WAIT);
    assert.equal(await page.locator('[aria-current="location"]').textContent(), "docs");

    const dataTransfer = await page.evaluateHandle(
      '(() => { const dt = new DataTransfer(); dt.items.add(new File([new Uint8Array([0x7f, 0x45, 0, 1, 2, 255])], "blob.bin")); return dt; })()',
    );
    await drop.dispatchEvent("drop", { dataTransfer });
    await drop.getByRole("button", { name: "blob.bin", exact: true }).click();
    await page.getByTestId("binary-note").waitFor(WAIT);
    assert.equal(await page.getByTestId("preview-text").count(), 0);

    // Text with a known language is highlighted (highlight.js, loaded on the first preview).
    const script = await page.evaluateHandle(
      '(() => { const dt = new DataTransfer(); dt.items.add(new File(["def greet(name):\\n    return f\\"hi {name}\\"\\n"], "greet.py")); return dt; })()',
    );
    await drop.dispatchEvent("drop", { dataTransfer: script });
    await drop.getByRole("button", { name: "greet.py", exact: true }).click();
    await page.getByTestId("preview-text").locator(".hljs-keyword").first().waitFor(WAIT);
    assert.match((await page.getByTestId("preview-text").textContent()) ?? "", /def greet\(name\)/);
    await stack.screenshot("sandbox-detail-files-highlight");
    await drop.getByRole("button", { name: "blob.bin", exact: true }).click();
    await page.getByTestId("binary-note").waitFor(WAIT);

    await page.getByRole("button", { name: "Rename blob.bin" }).click();
    await page.getByLabel("Rename blob.bin to").fill("renamed.bin");
    await page.getByRole("button", { name: "Rename", exact: true }).click();
    await drop.getByRole("button", { name: "renamed.bin", exact: true }).waitFor(WAIT);
    assert.equal(await drop.getByRole("button", { name: "blob.bin", exact: true }).count(), 0);
    assert.equal(await page.locator("#preview-title").textContent(), "renamed.bin");
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-files-binary");

    await page.getByRole("button", { name: "Delete renamed.bin" }).click();
    const dialog = page.getByRole("dialog", { name: "Delete file?" });
    assert.match((await dialog.textContent()) ?? "", /\/home\/user\/docs\/renamed\.bin/);
    await dialog.getByRole("button", { name: "Delete" }).click();
    await drop
      .getByRole("button", { name: "renamed.bin", exact: true })
      .waitFor({ state: "detached", ...WAIT });
    assert.equal(await page.locator("#preview-title").count(), 0);
    await page
      .getByRole("navigation", { name: "Folder path" })
      .getByRole("button", { name: "user" })
      .click();
    await drop.getByRole("button", { name: "dropped.txt", exact: true }).waitFor(WAIT);
  });

  test("files: a large text file previews its first MiB only", async () => {
    const { page } = stack;
    const put = await fetch(`${stack.url}/v1/sandboxes/${id}/files?path=/home/user/big.txt`, {
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream", Authorization: `Bearer ${token}` },
      body: "a".repeat(3 << 20),
    });
    assert.equal(put.status, 200, await put.text());
    await tab("Files").click();
    await page.getByRole("button", { name: "Refresh" }).click();
    const drop = page.getByTestId("file-drop");
    await drop.getByRole("button", { name: "big.txt", exact: true }).click();
    await page.getByText("Showing the first 1.0 MiB").waitFor(WAIT);
    const shown = await page.evaluate<number>(
      'document.querySelector("[data-testid=preview-text]")?.textContent?.length ?? 0',
    );
    assert.equal(shown, 1 << 20);
  });

  test("pause and resume show live; the terminal and the file survive", async () => {
    const { page } = stack;
    await tab("Overview").click();
    await page.getByRole("button", { name: "Pause", exact: true }).click();
    await status().filter({ hasText: "paused" }).waitFor(WAIT);
    await tab("Terminal").click();
    await page
      .getByTestId("terminal-state")
      .filter({ hasText: "Sandbox not running" })
      .waitFor(WAIT);
    await stack.screenshot("sandbox-detail-paused", { fullPage: false });

    await tab("Overview").click();
    await page.getByRole("button", { name: "Resume", exact: true }).click();
    await status().filter({ hasText: "running" }).waitFor(WAIT);
    await tab("Terminal").click();
    await page.getByTestId("terminal-state").filter({ hasText: "Connected" }).waitFor(WAIT);
    // Once from before the pause, once now (the same shell, re-attached, or a new one).
    const before = ((await termText()).match(new RegExp(content, "g")) ?? []).length;
    await typeInTerminal("cat ~/dropped.txt");
    await waitForTerm(new RegExp(content), before + 1);
  });

  test("metrics draw the sandbox's samples", async () => {
    const { page } = stack;
    // The tabs follow the ARIA pattern: arrows move the selection and the focus.
    await tab("Processes").click();
    await page.keyboard.press("ArrowRight");
    await page.waitForURL(/tab=metrics/);
    assert.equal(await tab("Metrics").getAttribute("aria-selected"), "true");
    assert.equal(await page.evaluate<string>("document.activeElement?.id ?? ''"), "tab-metrics");
    const chart = page.locator("#panel-metrics [data-points]").first();
    await chart.waitFor(WAIT);
    await page.waitForFunction(
      'Number(document.querySelector("#panel-metrics [data-points]")?.getAttribute("data-points")) > 0 && !!document.querySelector("#panel-metrics canvas")',
      null,
      WAIT,
    );
    assert.ok(Number(await chart.getAttribute("data-points")) > 0);
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-metrics");
    // Another range is another question to the API: the 2 h tier may have nothing yet.
    const metricsAsked = page.waitForRequest((r) => r.url().includes("/metrics?range=2h"), WAIT);
    await page.getByRole("button", { name: "2 h" }).click();
    await metricsAsked;
    assert.equal(
      await page.getByRole("button", { name: "2 h" }).getAttribute("aria-pressed"),
      "true",
    );
    await chart
      .or(page.getByRole("heading", { name: "No samples yet" }))
      .first()
      .waitFor(WAIT);
    assert.deepEqual(await seriousA11yViolations(page), []);
  });

  test("processes: listed, output attached, SIGTERM after a confirm", async () => {
    const { page } = stack;
    const started = await fetch(`${stack.url}/v1/sandboxes/${id}/processes`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({
        cmd: "/bin/bash",
        args: ["-c", "while :; do echo tick-$((n++)); sleep 0.5; done"],
        tag: "ticker",
      }),
    });
    assert.equal(started.status, 201, await started.text());
    await tab("Processes").click();
    await page.getByRole("button", { name: "Refresh" }).click();
    const row = page.locator("#panel-processes tbody tr", { hasText: "ticker" });
    await row.waitFor(WAIT);
    assert.match((await page.locator("#panel-processes tbody").textContent()) ?? "", /pty-/);
    await page.getByRole("button", { name: "Open output of ticker" }).click();
    await page
      .getByTestId("proc-output")
      .filter({ hasText: /tick-\d+/ })
      .waitFor(WAIT);
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-processes");

    await page.getByRole("button", { name: "Send SIGTERM to ticker" }).click();
    const dialog = page.getByRole("dialog", { name: "Send SIGTERM?" });
    await dialog.getByRole("button", { name: "Send SIGTERM" }).click();
    await row.waitFor({ state: "detached", ...WAIT });
    await page
      .getByTestId("proc-status")
      .filter({ hasText: /Exited|closed/ })
      .waitFor(WAIT);
  });

  test("snapshot from the list into a template, then launch a sandbox from it", async () => {
    const { page, url } = stack;
    const api = (path: string, init: RequestInit = {}) =>
      fetch(`${url}${path}`, {
        ...init,
        headers: { Authorization: `Bearer ${token}`, ...(init.headers ?? {}) },
      });
    const made = await api("/v1/sandboxes", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ template: "base", timeout_sec: 600 }),
    });
    const source = ((await made.json()) as { id: string }).id;
    assert.equal(made.status, 201);
    const marker = `snap-${randomBytes(4).toString("hex")}`;
    const put = await api(`/v1/sandboxes/${source}/files?path=/home/user/marker.txt`, {
      method: "PUT",
      body: marker,
    });
    assert.equal(put.status, 200, await put.text());

    await page
      .getByRole("navigation", { name: "Main" })
      .getByRole("link", { name: "Sandboxes" })
      .click();
    await page.waitForURL(`${url}/sandboxes`);
    await page.getByRole("button", { name: `Snapshot ${source}` }).click();
    const snap = page.getByRole("dialog", { name: "Snapshot sandbox" });
    await snap.getByLabel("Template name").fill("detail-snap");
    await snap.getByRole("button", { name: "Snapshot" }).click();
    await snap.getByRole("status").getByText("is ready").waitFor({ timeout: 120_000 });
    await page.getByRole("row", { name: new RegExp(source) }).waitFor({ state: "detached" });
    await snap.getByRole("link", { name: "Go to templates" }).click();
    await page.waitForURL(`${url}/templates`);
    await page.getByRole("button", { name: "Launch detail-snap" }).click();
    const dialog = page.getByRole("dialog", { name: "New sandbox" });
    assert.equal(await dialog.getByLabel("Template").inputValue(), "detail-snap");
    const createdRes = page.waitForResponse(
      (r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/v1/sandboxes",
      WAIT,
    );
    await dialog.getByRole("button", { name: "Create sandbox" }).click();
    const res = await createdRes;
    const child = (await res.json()) as { id: string; template: string };
    assert.equal(res.status(), 201, JSON.stringify(child));
    assert.equal(child.template, "detail-snap");
    await page.waitForURL(`${url}/sandboxes`, WAIT);
    await page
      .getByRole("row", { name: new RegExp(child.id) })
      .getByText("running")
      .waitFor(WAIT);
    // The snapshot carried the file into the new sandbox.
    const read = await api(`/v1/sandboxes/${child.id}/files?path=/home/user/marker.txt`);
    assert.equal(read.status, 200);
    assert.equal(await read.text(), marker);
    await stack.screenshot("sandbox-detail-launched-from-snapshot");
    assert.equal((await api(`/v1/sandboxes/${child.id}`, { method: "DELETE" })).status, 204);
    await page.goto(`${url}/sandboxes/${id}`);
    await page.getByRole("heading", { name: id }).waitFor(WAIT);
  });

  test("kill asks first, then goes back to the list", async () => {
    const { page, url } = stack;
    await tab("Overview").click();
    await page.getByRole("button", { name: "Kill", exact: true }).click();
    const dialog = page.getByRole("dialog", { name: "Kill sandbox?" });
    await dialog.getByRole("button", { name: "Kill sandbox" }).click();
    await page.waitForURL(`${url}/sandboxes`, WAIT);
    const row = await stack.server.db.query<{ status: string }>(
      "SELECT status FROM sandboxes WHERE id = $1",
      [id],
    );
    assert.equal(row[0]?.status, "stopped");
  });

  test("another team's user gets Sandbox not found", async () => {
    const { page, url } = stack;
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL(`${url}/login`);
    const eve = `eve-${Date.now()}@example.com`;
    await signUp("Eve", eve);
    await page.goto(`${url}/sandboxes/${id}`);
    await landsSignedIn(() => page.getByRole("heading", { name: "Sandbox not found" }));
    assert.equal(await page.getByRole("tab").count(), 0);
    assert.deepEqual(await seriousA11yViolations(page), []);
    await stack.screenshot("sandbox-detail-not-found");
  });
});
