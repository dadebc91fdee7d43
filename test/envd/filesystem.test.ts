/**
 * envd's Filesystem RPC service against a real envd: stat, list, mkdir, move, remove, watch,
 * permissions as the requesting user and ownership of what it creates.
 *
 * One file (~570 lines) because all cases share one envd and one scratch tree.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { EventType, FileType } from "@nestbox/proto/filesystem";
import {
  FileNotFoundError,
  type FilesystemEvent,
  FilesystemEventType,
  InvalidArgumentError,
  type Sandbox,
} from "e2b";
import {
  basicUser,
  fsClient,
  idsOf,
  rawRequest,
  type TempDir,
  tempDir,
  waitFor,
} from "./support/fs-helpers.js";
import { type EnvdProcess, sdkSandbox, startEnvd } from "./support/harness.js";

let envd: EnvdProcess;
let sbx: Sandbox;
let tmp: TempDir;
let client: ReturnType<typeof fsClient>;

before(async () => {
  envd = await startEnvd();
  sbx = sdkSandbox(envd);
  client = fsClient(envd);
  tmp = tempDir("fs", "user");
});

after(async () => {
  tmp?.cleanup();
  await envd?.stop();
});

/** A fresh user-owned directory inside the suite's temp dir. */
function userDir(name: string): string {
  const p = path.join(tmp.path, name);
  mkdirSync(p);
  const { uid, gid } = idsOf("user");
  chownSync(p, uid, gid);
  return p;
}

async function rejectsWithCode(p: Promise<unknown>, code: Code): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ConnectError, `expected ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    return true;
  });
}

/** Collects watch events until `done` says they suffice; always stops the watch. */
async function watchUntil(
  dir: string,
  opts: { recursive?: boolean; includeEntry?: boolean },
  act: () => Promise<void>,
  done: (events: FilesystemEvent[]) => boolean,
): Promise<FilesystemEvent[]> {
  const events: FilesystemEvent[] = [];
  const handle = await sbx.files.watchDir(dir, (e) => void events.push(e), opts);
  try {
    await act();
    await waitFor(() => done(events), `watch events, got ${JSON.stringify(events)}`);
    return events;
  } finally {
    await handle.stop();
  }
}

const has = (events: FilesystemEvent[], type: FilesystemEventType, name: string) =>
  events.some((e) => e.type === type && e.name === name);

describe("Stat / getInfo / exists", () => {
  test("getInfo reports owner, group, permissions, size and mtime", async () => {
    const dir = userDir("info");
    const before = Date.now();
    await sbx.files.write(`${dir}/a.txt`, "hello");
    const info = await sbx.files.getInfo(`${dir}/a.txt`);
    assert.equal(info.name, "a.txt");
    assert.equal(info.type, "file");
    assert.equal(info.path, `${dir}/a.txt`);
    assert.equal(info.size, 5);
    assert.equal(info.owner, "user");
    assert.equal(info.group, "user");
    assert.equal(info.permissions, "-rw-r--r--");
    assert.equal(info.mode, 0o644);
    assert.ok(info.modifiedTime instanceof Date);
    assert.ok(Math.abs(info.modifiedTime.getTime() - before) < 10_000, String(info.modifiedTime));

    chmodSync(dir, 0o1750);
    const dirInfo = await sbx.files.getInfo(dir);
    assert.equal(dirInfo.type, "dir");
    assert.equal(dirInfo.permissions, "dtrwxr-x---");
    chmodSync(dir, 0o755);
  });

  test("relative paths resolve against the user's home", async () => {
    const info = await sbx.files.getInfo(".");
    assert.equal(info.path, "/home/user");
    const rootHome = await sbx.files.getInfo("~", { user: "root" });
    assert.equal(rootHome.path, "/root");
  });

  test("symlinks carry their resolved target and the target's type", async () => {
    const dir = userDir("links");
    writeFileSync(`${dir}/target.txt`, "t");
    symlinkSync(`${dir}/target.txt`, `${dir}/link`);
    symlinkSync(`${dir}/nowhere`, `${dir}/dangling`);
    const info = await sbx.files.getInfo(`${dir}/link`);
    assert.equal(info.symlinkTarget, `${dir}/target.txt`);
    assert.equal(info.type, "file");
    assert.equal(info.permissions, "Lrwxrwxrwx");
    const dangling = await sbx.files.getInfo(`${dir}/dangling`);
    assert.equal(dangling.type, "symlink");
  });

  test("exists is true for files and dirs, false for missing paths", async () => {
    const dir = userDir("exists");
    writeFileSync(`${dir}/f`, "x");
    assert.equal(await sbx.files.exists(`${dir}/f`), true);
    assert.equal(await sbx.files.exists(dir), true);
    assert.equal(await sbx.files.exists(`${dir}/missing`), false);
    await assert.rejects(sbx.files.getInfo(`${dir}/missing`), FileNotFoundError);
  });

  test("an empty path is invalid_argument", async () => {
    await rejectsWithCode(client.stat({ path: "" }), Code.InvalidArgument);
    await rejectsWithCode(client.move({ source: "", destination: "/tmp/x" }), Code.InvalidArgument);
  });

  test("an unknown user is invalid_argument", async () => {
    await rejectsWithCode(
      client.stat({ path: "/tmp" }, { headers: basicUser("no-such-user-nbx") }),
      Code.InvalidArgument,
    );
  });
});

describe("ListDir", () => {
  test("depth 1 lists direct children; depth 2 recurses with paths under the request", async () => {
    const dir = userDir("list");
    await sbx.files.write(`${dir}/a.txt`, "a");
    await sbx.files.write(`${dir}/sub/b.txt`, "b");
    await sbx.files.write(`${dir}/sub/deeper/c.txt`, "c");
    symlinkSync(`${dir}/sub`, `${dir}/zlink`);

    const one = await sbx.files.list(dir);
    assert.deepEqual(
      one.map((e) => [e.name, e.type, e.path]),
      [
        ["a.txt", "file", `${dir}/a.txt`],
        ["sub", "dir", `${dir}/sub`],
        // A link to a directory reports the target's type, but is never descended into.
        ["zlink", "dir", `${dir}/zlink`],
      ],
    );
    const two = await sbx.files.list(dir, { depth: 2 });
    assert.deepEqual(
      two.map((e) => e.path),
      [`${dir}/a.txt`, `${dir}/sub`, `${dir}/sub/b.txt`, `${dir}/sub/deeper`, `${dir}/zlink`],
    );
    const three = await sbx.files.list(dir, { depth: 3 });
    assert.ok(three.some((e) => e.path === `${dir}/sub/deeper/c.txt`));
    assert.ok(!three.some((e) => e.path.startsWith(`${dir}/zlink/`)));

    // Listing through a link keeps the requested path as the prefix.
    const viaLink = await sbx.files.list(`${dir}/zlink`);
    assert.deepEqual(
      viaLink.map((e) => e.path),
      [`${dir}/zlink/b.txt`, `${dir}/zlink/deeper`],
    );
  });

  test("listing a file is invalid_argument, a missing path not_found", async () => {
    const dir = userDir("list-bad");
    writeFileSync(`${dir}/f`, "x");
    await assert.rejects(sbx.files.list(`${dir}/f`), InvalidArgumentError);
    await assert.rejects(sbx.files.list(`${dir}/missing`), FileNotFoundError);
  });
});

describe("MakeDir / Move / Remove", () => {
  test("makeDir creates parents owned by the user, then reports false", async () => {
    const dir = userDir("mk");
    assert.equal(await sbx.files.makeDir(`${dir}/a/b/c`), true);
    for (const p of [`${dir}/a`, `${dir}/a/b`, `${dir}/a/b/c`]) {
      const st = lstatSync(p);
      assert.ok(st.isDirectory());
      assert.equal(st.uid, idsOf("user").uid, p);
    }
    assert.equal(await sbx.files.makeDir(`${dir}/a/b/c`), false);
    writeFileSync(`${dir}/file`, "x");
    await assert.rejects(sbx.files.makeDir(`${dir}/file`), InvalidArgumentError);
  });

  test("makeDir as root creates root-owned directories", async () => {
    const dir = userDir("mk-root");
    assert.equal(await sbx.files.makeDir(`${dir}/r`, { user: "root" }), true);
    assert.equal(lstatSync(`${dir}/r`).uid, 0);
  });

  test("rename moves into new parents and returns the new entry", async () => {
    const dir = userDir("mv");
    await sbx.files.write(`${dir}/from.txt`, "data");
    const entry = await sbx.files.rename(`${dir}/from.txt`, `${dir}/new/parent/to.txt`);
    assert.equal(entry.path, `${dir}/new/parent/to.txt`);
    assert.equal(entry.name, "to.txt");
    assert.equal(entry.size, 4);
    assert.equal(existsSync(`${dir}/from.txt`), false);
    assert.equal(lstatSync(`${dir}/new`).uid, idsOf("user").uid);
    await assert.rejects(sbx.files.rename(`${dir}/from.txt`, `${dir}/x`), FileNotFoundError);
  });

  test("remove deletes files and whole trees", async () => {
    const dir = userDir("rm");
    await sbx.files.write(`${dir}/tree/a/b.txt`, "b");
    await sbx.files.write(`${dir}/single.txt`, "s");
    await sbx.files.remove(`${dir}/tree`);
    await sbx.files.remove(`${dir}/single.txt`);
    assert.deepEqual(readdirSync(dir), []);
    await assert.rejects(sbx.files.remove(`${dir}/tree`), FileNotFoundError);
  });
});

describe("permissions", () => {
  test("a user cannot list, stat inside, or read a root-only directory", async () => {
    const secret = tempDir("secret");
    try {
      chmodSync(secret.path, 0o700);
      writeFileSync(`${secret.path}/key`, "s3cret");
      await rejectsWithCode(client.listDir({ path: secret.path, depth: 1 }), Code.PermissionDenied);
      await rejectsWithCode(client.stat({ path: `${secret.path}/key` }), Code.PermissionDenied);
      // Existence must not leak either: a missing name is denied the same way.
      await rejectsWithCode(client.stat({ path: `${secret.path}/nope` }), Code.PermissionDenied);
      await rejectsWithCode(client.listDir({ path: "/root", depth: 1 }), Code.PermissionDenied);
      // root may.
      const entries = await sbx.files.list(secret.path, { user: "root" });
      assert.deepEqual(
        entries.map((e) => e.name),
        ["key"],
      );
    } finally {
      secret.cleanup();
    }
  });

  test("a user cannot create, move or remove in a root-owned directory", async () => {
    const owned = tempDir("rootowned");
    try {
      chmodSync(owned.path, 0o755);
      writeFileSync(`${owned.path}/f`, "x");
      mkdirSync(`${owned.path}/d`);
      writeFileSync(`${owned.path}/d/inner`, "x");
      await rejectsWithCode(client.makeDir({ path: `${owned.path}/new` }), Code.PermissionDenied);
      await rejectsWithCode(
        client.move({ source: `${owned.path}/f`, destination: `${tmp.path}/stolen` }),
        Code.PermissionDenied,
      );
      await rejectsWithCode(client.remove({ path: `${owned.path}/f` }), Code.PermissionDenied);
      await rejectsWithCode(client.remove({ path: `${owned.path}/d` }), Code.PermissionDenied);
      assert.ok(existsSync(`${owned.path}/f`));
      assert.ok(existsSync(`${owned.path}/d/inner`));
    } finally {
      owned.cleanup();
    }
  });

  test("the sticky bit protects other users' entries in /tmp-like directories", async () => {
    const sticky = tempDir("sticky");
    try {
      chmodSync(sticky.path, 0o1777);
      writeFileSync(`${sticky.path}/roots`, "x");
      await rejectsWithCode(client.remove({ path: `${sticky.path}/roots` }), Code.PermissionDenied);
      // Removing its own entry there is fine.
      await sbx.files.write(`${sticky.path}/mine`, "m");
      await sbx.files.remove(`${sticky.path}/mine`);
      assert.equal(existsSync(`${sticky.path}/mine`), false);
      assert.ok(existsSync(`${sticky.path}/roots`));
    } finally {
      sticky.cleanup();
    }
  });

  test("group bits apply to the primary and supplementary groups from /etc/group", async () => {
    const shared = tempDir("group");
    const group = "nbxfstest";
    execFileSync("groupadd", ["-f", group]);
    try {
      chownSync(shared.path, 0, idsOf("user").gid);
      chmodSync(shared.path, 0o770);
      assert.equal(await sbx.files.makeDir(`${shared.path}/primary`), true);

      const gid = Number(
        execFileSync("getent", ["group", group], { encoding: "utf8" }).split(":")[2],
      );
      chownSync(shared.path, 0, gid);
      await rejectsWithCode(
        client.makeDir({ path: `${shared.path}/before` }),
        Code.PermissionDenied,
      );
      execFileSync("usermod", ["-aG", group, "user"]);
      // Membership is read per request: no restart needed.
      assert.equal(await sbx.files.makeDir(`${shared.path}/supplementary`), true);
      chmodSync(shared.path, 0o700);
      await rejectsWithCode(
        client.makeDir({ path: `${shared.path}/denied` }),
        Code.PermissionDenied,
      );
    } finally {
      shared.cleanup();
      execFileSync("groupdel", [group]);
    }
  });
});

describe("WatchDir", () => {
  test("reports create, write, rename and remove with names relative to the dir", async () => {
    const dir = userDir("watch");
    writeFileSync(`${dir}/existing.txt`, "old");
    chownSync(`${dir}/existing.txt`, idsOf("user").uid, idsOf("user").gid);
    const events = await watchUntil(
      dir,
      {},
      async () => {
        await sbx.files.write(`${dir}/new.txt`, "content");
        await sbx.files.write(`${dir}/existing.txt`, "changed");
        await sbx.files.rename(`${dir}/new.txt`, `${dir}/renamed.txt`);
        await sbx.files.remove(`${dir}/renamed.txt`);
      },
      (ev) => has(ev, FilesystemEventType.REMOVE, "renamed.txt"),
    );
    assert.ok(has(events, FilesystemEventType.CREATE, "new.txt"), JSON.stringify(events));
    assert.ok(has(events, FilesystemEventType.WRITE, "new.txt"), JSON.stringify(events));
    assert.ok(has(events, FilesystemEventType.WRITE, "existing.txt"), JSON.stringify(events));
    assert.ok(has(events, FilesystemEventType.RENAME, "new.txt"), JSON.stringify(events));
    assert.ok(has(events, FilesystemEventType.CREATE, "renamed.txt"), JSON.stringify(events));
    // Upload temp files never show.
    assert.ok(!events.some((e) => e.name.includes("nestbox-upload")), JSON.stringify(events));
  });

  test("overwriting a file again and again reports writes, never a removal", async () => {
    const dir = userDir("watch-overwrite");
    const events = await watchUntil(
      dir,
      {},
      async () => {
        for (let i = 0; i < 5; i++) await sbx.files.write(`${dir}/same.txt`, `version ${i}`);
        await sbx.files.write(`${dir}/done`, "");
      },
      (ev) => has(ev, FilesystemEventType.CREATE, "done"),
    );
    const forSame = events.filter((e) => e.name === "same.txt");
    assert.ok(
      forSame.filter((e) => e.type === FilesystemEventType.WRITE).length >= 5,
      JSON.stringify(events),
    );
    assert.ok(!has(events, FilesystemEventType.REMOVE, "same.txt"), JSON.stringify(events));
    assert.ok(!has(events, FilesystemEventType.RENAME, "same.txt"), JSON.stringify(events));
  });

  test("reports chmod separately from writes", async () => {
    const dir = userDir("watch-chmod");
    writeFileSync(`${dir}/f`, "x");
    const events = await watchUntil(
      dir,
      {},
      async () => chmodSync(`${dir}/f`, 0o600),
      (ev) => has(ev, FilesystemEventType.CHMOD, "f"),
    );
    assert.ok(!has(events, FilesystemEventType.WRITE, "f"), JSON.stringify(events));
  });

  test("non-recursive watches ignore subdirectories", async () => {
    const dir = userDir("watch-flat");
    mkdirSync(`${dir}/sub`);
    const events = await watchUntil(
      dir,
      {},
      async () => {
        writeFileSync(`${dir}/sub/inner.txt`, "x");
        writeFileSync(`${dir}/marker`, "x");
      },
      (ev) => has(ev, FilesystemEventType.CREATE, "marker"),
    );
    assert.ok(!events.some((e) => e.name.includes("inner")), JSON.stringify(events));
  });

  test("recursive watches see existing and newly created subdirectories", async () => {
    const dir = userDir("watch-rec");
    await sbx.files.makeDir(`${dir}/old`);
    const events = await watchUntil(
      dir,
      { recursive: true },
      async () => {
        await sbx.files.write(`${dir}/old/a.txt`, "a");
        await sbx.files.makeDir(`${dir}/fresh`);
        await sbx.files.write(`${dir}/fresh/b.txt`, "b");
        // Created in one go: the deeper levels appear before their watches exist.
        mkdirSync(`${dir}/x/y/z`, { recursive: true });
        writeFileSync(`${dir}/x/y/z/deep.txt`, "d");
      },
      (ev) =>
        has(ev, FilesystemEventType.WRITE, "old/a.txt") &&
        has(ev, FilesystemEventType.WRITE, "fresh/b.txt") &&
        has(ev, FilesystemEventType.CREATE, "x/y/z/deep.txt"),
    );
    assert.ok(has(events, FilesystemEventType.CREATE, "fresh"), JSON.stringify(events));
    assert.ok(has(events, FilesystemEventType.CREATE, "x/y"), JSON.stringify(events));
  });

  test("includeEntry attaches the entry while the file exists", async () => {
    const dir = userDir("watch-entry");
    const events: FilesystemEvent[] = [];
    const handle = await sbx.files.watchDir(dir, (e) => void events.push(e), {
      includeEntry: true,
    });
    try {
      await sbx.files.write(`${dir}/e.txt`, "12345");
      await waitFor(() => has(events, FilesystemEventType.WRITE, "e.txt"), "WRITE e.txt");
      await sbx.files.remove(`${dir}/e.txt`);
      await waitFor(() => has(events, FilesystemEventType.REMOVE, "e.txt"), "REMOVE e.txt");
    } finally {
      await handle.stop();
    }
    const write = events.find((e) => e.type === FilesystemEventType.WRITE && e.name === "e.txt");
    assert.ok(write?.entry, JSON.stringify(events));
    assert.equal(write.entry.path, `${dir}/e.txt`);
    assert.equal(write.entry.type, "file");
    assert.equal(write.entry.size, 5);
    assert.equal(write.entry.owner, "user");
    const removed = events.find((e) => e.type === FilesystemEventType.REMOVE);
    assert.equal(removed?.entry, undefined);
  });

  test("watching a missing path is not_found, a file invalid_argument", async () => {
    const dir = userDir("watch-bad");
    writeFileSync(`${dir}/file`, "x");
    await assert.rejects(
      sbx.files.watchDir(`${dir}/missing`, () => {}),
      FileNotFoundError,
    );
    await assert.rejects(
      sbx.files.watchDir(`${dir}/file`, () => {}),
      InvalidArgumentError,
    );
    await assert.rejects(
      sbx.files.watchDir("/root", () => {}),
      (err: Error) => /permission denied/i.test(err.message),
    );
  });

  test("sends keepalives at the requested interval and ends when the client aborts", async () => {
    const dir = userDir("watch-keepalive");
    const abort = new AbortController();
    const seen: string[] = [];
    const started = Date.now();
    const stream = client.watchDir(
      { path: dir },
      { headers: { "keepalive-ping-interval": "1" }, signal: abort.signal },
    );
    try {
      for await (const msg of stream) {
        seen.push(msg.event.case ?? "none");
        if (seen.filter((c) => c === "keepalive").length === 2) break;
      }
    } finally {
      abort.abort();
    }
    assert.equal(seen[0], "start");
    assert.deepEqual(seen.slice(1), ["keepalive", "keepalive"]);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 1_500 && elapsed < 5_000, `took ${elapsed} ms`);
    // envd is still healthy after the client went away.
    assert.equal((await rawRequest(envd, { method: "GET", path: "/health" })).status, 204);
  });
});

describe("polling watchers", () => {
  test("CreateWatcher buffers events until GetWatcherEvents drains them", async () => {
    const dir = userDir("poll");
    const { watcherId } = await client.createWatcher({
      path: dir,
      recursive: true,
      includeEntry: true,
    });
    assert.ok(watcherId.length > 0);
    try {
      mkdirSync(`${dir}/sub`);
      await new Promise((r) => setTimeout(r, 100));
      writeFileSync(`${dir}/sub/p.txt`, "poll");
      renameSync(`${dir}/sub/p.txt`, `${dir}/q.txt`);
      rmSync(`${dir}/q.txt`);
      const events: { name: string; type: EventType; hasEntry: boolean }[] = [];
      for (let i = 0; i < 100 && !events.some((e) => e.type === EventType.REMOVE); i++) {
        const res = await client.getWatcherEvents({ watcherId });
        events.push(
          ...res.events.map((e) => ({ name: e.name, type: e.type, hasEntry: !!e.entry })),
        );
        await new Promise((r) => setTimeout(r, 50));
      }
      const want = (type: EventType, name: string) =>
        events.some((e) => e.type === type && e.name === name);
      assert.ok(want(EventType.CREATE, "sub"), JSON.stringify(events));
      assert.ok(want(EventType.CREATE, "sub/p.txt"), JSON.stringify(events));
      assert.ok(want(EventType.WRITE, "sub/p.txt"), JSON.stringify(events));
      assert.ok(want(EventType.RENAME, "sub/p.txt"), JSON.stringify(events));
      assert.ok(want(EventType.REMOVE, "q.txt"), JSON.stringify(events));
      assert.ok(events.find((e) => e.type === EventType.CREATE && e.name === "sub")?.hasEntry);
      // Drained: nothing new is pending.
      assert.deepEqual((await client.getWatcherEvents({ watcherId })).events, []);
    } finally {
      await client.removeWatcher({ watcherId });
    }
    await rejectsWithCode(client.getWatcherEvents({ watcherId }), Code.NotFound);
    await rejectsWithCode(client.removeWatcher({ watcherId }), Code.NotFound);
  });

  test("unknown ids are not_found, bad paths are rejected", async () => {
    await rejectsWithCode(client.getWatcherEvents({ watcherId: "nope" }), Code.NotFound);
    await rejectsWithCode(client.removeWatcher({ watcherId: "nope" }), Code.NotFound);
    await rejectsWithCode(client.getWatcherEvents({ watcherId: "" }), Code.InvalidArgument);
    await rejectsWithCode(client.createWatcher({ path: `${tmp.path}/missing` }), Code.NotFound);
    await rejectsWithCode(client.createWatcher({ path: "/root" }), Code.PermissionDenied);
  });
});

describe("metadata", () => {
  test("X-Metadata-* headers land in Stat and ListDir as lowercased keys", async () => {
    const dir = userDir("meta");
    const res = await rawRequest(envd, {
      method: "POST",
      path: `/files?path=${encodeURIComponent(`${dir}/m.txt`)}`,
      headers: {
        "content-type": "application/octet-stream",
        "X-Metadata-Project": "nestbox",
        "x-metadata-Stage": "test",
      },
      body: Buffer.from("meta"),
    });
    assert.equal(res.status, 200, res.body.toString());
    assert.deepEqual(JSON.parse(res.body.toString()), [
      {
        name: "m.txt",
        path: `${dir}/m.txt`,
        type: "file",
        metadata: { project: "nestbox", stage: "test" },
      },
    ]);
    const { entry } = await client.stat({ path: `${dir}/m.txt` });
    assert.deepEqual({ ...entry?.metadata }, { project: "nestbox", stage: "test" });
    assert.equal(entry?.type, FileType.FILE);
    const { entries } = await client.listDir({ path: dir, depth: 1 });
    assert.deepEqual({ ...entries[0]?.metadata }, { project: "nestbox", stage: "test" });
  });
});
