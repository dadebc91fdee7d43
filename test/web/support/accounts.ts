/**
 * Account steps the admin and hosts page tests share: users signed up and logged in through
 * the API (a bearer token for the calls a test makes on the side) or through the pages, and
 * the platform admin `nestbox up` seeds.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { seedAllInOne } from "../../../packages/server/src/bootstrap/seed.js";
import type { WebStack } from "./browser-fixture.js";

export interface Account {
  name: string;
  email: string;
  password: string;
}

/** Polls `check` until it holds; fails after `ms`. */
export async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A fresh account with its own (default) team; returns the user's id. */
export async function signUpByApi(stack: WebStack, a: Account): Promise<string> {
  const res = await fetch(`${stack.url}/v1/auth/signup`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(a),
  });
  const body = (await res.json()) as { user: { id: string } };
  assert.equal(res.status, 201, JSON.stringify(body));
  return body.user.id;
}

/** A bearer token (no cookie session) for API calls made beside the page. */
export async function tokenOf(stack: WebStack, a: Pick<Account, "email" | "password">) {
  const res = await fetch(`${stack.url}/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: a.email, password: a.password }),
  });
  const body = (await res.json()) as { token: string };
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.token;
}

/** A JSON API call with a bearer token; returns the status and the parsed body (if any). */
export async function apiCall(
  stack: WebStack,
  token: string,
  method: string,
  pathname: string,
  body?: unknown,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(`${stack.url}${pathname}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
}

/** The platform admin and team `nestbox up` seeds (stacks without an agent do not seed them). */
export async function seedAdmin(
  stack: WebStack,
): Promise<{ admin: Account; platformTeamId: string }> {
  const seeded = await seedAllInOne(stack.server.db, { dataDir: stack.dataDir });
  const password = readFileSync(path.join(stack.dataDir, "admin-password"), "utf8").trim();
  return {
    admin: { name: "Admin", email: "admin@localhost", password },
    platformTeamId: seeded.platformTeamId,
  };
}

/** Logs in through the login page (from wherever the page is) and waits for the app. */
export async function logInByPage(stack: WebStack, a: Pick<Account, "email" | "password">) {
  const { page, url } = stack;
  if (!page.url().startsWith(`${url}/login`)) await page.goto(`${url}/login`);
  await page.getByLabel("E-mail").fill(a.email);
  await page.getByLabel("Password").fill(a.password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("navigation", { name: "Main" }).waitFor();
}

/** Logs out through the sidebar. */
export async function logOutByPage(stack: WebStack) {
  await stack.page.getByRole("button", { name: "Log out" }).click();
  await stack.page.waitForURL(`${stack.url}/login`);
}
