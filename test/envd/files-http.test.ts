import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { connect } from "node:net";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, describe, test } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { FileNotFoundError, InvalidArgumentError, type Sandbox } from "e2b";
import { idsOf, memoryOf, rawRequest, type TempDir, tempDir } from "./support/fs-helpers.js";
import { type EnvdProcess, sdkSandbox, startEnvd } from "./support/harness.js";

const TOKEN = "fs-http-test-token";

let envd: EnvdProcess;
let sbx: Sandbox;
let tmp: TempDir;

before(async () => {
  envd = await startEnvd(["--access-token", TOKEN]);
  sbx = sdkSandbox(envd, { accessToken: TOKEN });
  tmp = tempDir("files", "user");
});

after(async () => {
  tmp?.cleanup();
  await envd?.stop();
});

const auth = { "x-access-token": TOKEN };
const q = (p: string) => encodeURIComponent(p);

function userOwned(name: string): string {
  const p = `${tmp.path}/${name}`;
  mkdirSync(p);
  const { uid, gid } = idsOf("user");
  execFileSync("chown", [`${uid}:${gid}`, p]);
  return p;
}

describe("SDK read and write", () => {
  test("text, bytes, blob and stream round-trip", async () => {
    const dir = userOwned("formats");
    const bytes = new Uint8Array([0, 1, 2, 254, 255]);
    await sbx.files.write(`${dir}/t.txt`, "héllo wörld");
    await sbx.files.write(`${dir}/b.bin`, bytes.buffer);
    await sbx.files.write(`${dir}/blob.bin`, new Blob([bytes]));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("streamed "));
        c.enqueue(new TextEncoder().encode("upload"));
        c.close();
      },
    });
    await sbx.files.write(`${dir}/s.txt`, stream);

    assert.equal(await sbx.files.read(`${dir}/t.txt`), "héllo wörld");
    assert.deepEqual(await sbx.files.read(`${dir}/b.bin`, { format: "bytes" }), bytes);
    const blob = await sbx.files.read(`${dir}/blob.bin`, { format: "blob" });
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bytes);
    const rs = await sbx.files.read(`${dir}/s.txt`, { format: "stream" });
    assert.equal(await new Response(rs).text(), "streamed upload");
    assert.equal(readFileSync(`${dir}/s.txt`, "utf8"), "streamed upload");
  });

  test("gzip uploads and downloads", async () => {
    const dir = userOwned("gzip");
    const text = "compress me ".repeat(1000);
    await sbx.files.write(`${dir}/g.txt`, text, { gzip: true });
    assert.equal(readFileSync(`${dir}/g.txt`, "utf8"), text);
    assert.equal(await sbx.files.read(`${dir}/g.txt`, { gzip: true }), text);

    const res = await rawRequest(envd, {
      method: "GET",
      path: `/files?path=${q(`${dir}/g.txt`)}`,
      headers: { ...auth, "accept-encoding": "gzip" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers["content-encoding"], "gzip");
    assert.ok(res.body.length < text.length / 10, `compressed to ${res.body.length}`);
    assert.equal(gunzipSync(res.body).toString(), text);

    const plain = await rawRequest(envd, {
      method: "GET",
      path: `/files?path=${q(`${dir}/g.txt`)}`,
      headers: auth,
    });
    assert.equal(plain.headers["content-encoding"], undefined);
    assert.equal(plain.headers["content-length"], String(text.length));

    // A raw gzip body, decompressed while streaming to disk.
    const up = await rawRequest(envd, {
      method: "POST",
      path: `/files?path=${q(`${dir}/raw.txt`)}`,
      headers: { ...auth, "content-type": "application/octet-stream", "content-encoding": "gzip" },
      body: gzipSync(Buffer.from("raw gzip body")),
    });
    assert.equal(up.status, 200, up.body.toString());
    assert.equal(readFileSync(`${dir}/raw.txt`, "utf8"), "raw gzip body");
    const bad = await rawRequest(envd, {
      method: "POST",
      path: `/files?path=${q(`${dir}/bad.txt`)}`,
      headers: { ...auth, "content-type": "application/octet-stream", "content-encoding": "gzip" },
      body: Buffer.from("not gzip at all"),
    });
    assert.ok(bad.status >= 400, String(bad.status));
    assert.equal(existsSync(`${dir}/bad.txt`), false);
  });

  test("writeFiles writes many files, relative paths land in the home", async () => {
    const dir = userOwned("many");
    const rel = `nbx-files-test-${process.pid}.txt`;
    try {
      const infos = await sbx.files.writeFiles([
        { path: `${dir}/one.txt`, data: "1" },
        { path: `${dir}/nested/deep/two.txt`, data: "2" },
        { path: rel, data: "home" },
      ]);
      assert.deepEqual(
        infos.map((i) => [i.name, i.path, i.type]),
        [
          ["one.txt", `${dir}/one.txt`, "file"],
          ["two.txt", `${dir}/nested/deep/two.txt`, "file"],
          [rel, `/home/user/${rel}`, "file"],
        ],
      );
      assert.equal(readFileSync(`${dir}/nested/deep/two.txt`, "utf8"), "2");
      assert.equal(lstatSync(`${dir}/nested`).uid, idsOf("user").uid);
      assert.equal(readFileSync(`/home/user/${rel}`, "utf8"), "home");
    } finally {
      execFileSync("rm", ["-f", `/home/user/${rel}`]);
    }
  });

  test("overwriting keeps mode and metadata, leaves no temp files", async () => {
    const dir = userOwned("overwrite");
    await sbx.files.write(`${dir}/o.sh`, "v1", { metadata: { kind: "script" } });
    chmodSync(`${dir}/o.sh`, 0o750);
    await sbx.files.write(`${dir}/o.sh`, "version two");
    assert.equal(readFileSync(`${dir}/o.sh`, "utf8"), "version two");
    assert.equal(lstatSync(`${dir}/o.sh`).mode & 0o777, 0o750);
    assert.deepEqual((await sbx.files.getInfo(`${dir}/o.sh`)).metadata, { kind: "script" });
    assert.deepEqual(readdirSync(dir), ["o.sh"]);
  });

  test("empty files have content-length 0 and read back empty", async () => {
    const dir = userOwned("empty");
    await sbx.files.write(`${dir}/e`, "");
    assert.equal(lstatSync(`${dir}/e`).size, 0);
    assert.equal(await sbx.files.read(`${dir}/e`), "");
    assert.deepEqual(await sbx.files.read(`${dir}/e`, { format: "bytes" }), new Uint8Array());
    const res = await rawRequest(envd, {
      method: "GET",
      path: `/files?path=${q(`${dir}/e`)}`,
      headers: { ...auth, "accept-encoding": "gzip" },
    });
    assert.equal(res.headers["content-length"], "0");
  });

  test("downloads carry Content-Disposition and honour a byte range", async () => {
    const dir = userOwned("headers");
    writeFileSync(`${dir}/report 1.txt`, "0123456789");
    const res = await rawRequest(envd, {
      method: "GET",
      path: `/files?path=${q(`${dir}/report 1.txt`)}`,
      headers: { ...auth, range: "bytes=2-5" },
    });
    assert.equal(res.status, 206);
    assert.equal(res.body.toString(), "2345");
    assert.equal(res.headers["content-range"], "bytes 2-5/10");
    assert.equal(res.headers["content-type"], "application/octet-stream");
    assert.equal(res.headers["content-disposition"], 'inline; filename="report 1.txt"');
  });

  test("directories are 400, missing files 404, with JSON bodies", async () => {
    const dir = userOwned("errors");
    await assert.rejects(sbx.files.read(dir), InvalidArgumentError);
    await assert.rejects(sbx.files.read(`${dir}/missing`), FileNotFoundError);
    const res = await rawRequest(envd, {
      method: "GET",
      path: `/files?path=${q(`${dir}/missing`)}`,
      headers: auth,
    });
    assert.equal(res.status, 404);
    const body = JSON.parse(res.body.toString());
    assert.equal(body.code, 404);
    assert.match(body.message, /no such file or directory/);
    // Writing onto a directory is refused too.
    await assert.rejects(sbx.files.write(dir, "x"), InvalidArgumentError);
  });

  test("metadata given to write comes back from write and getInfo", async () => {
    const dir = userOwned("meta");
    const info = await sbx.files.write(`${dir}/m.txt`, "m", {
      metadata: { Owner: "team-a", v: "2" },
    });
    assert.deepEqual(info.metadata, { owner: "team-a", v: "2" });
    assert.deepEqual((await sbx.files.getInfo(`${dir}/m.txt`)).metadata, {
      owner: "team-a",
      v: "2",
    });
    const listed = await sbx.files.list(dir);
    assert.deepEqual(listed[0]?.metadata, { owner: "team-a", v: "2" });
    const plain = await sbx.files.write(`${dir}/plain.txt`, "p");
    assert.equal(plain.metadata, undefined);
  });
});

describe("users", () => {
  test("files are owned by the user they are written as", async () => {
    const dir = userOwned("owners");
    await sbx.files.write(`${dir}/as-user.txt`, "u");
    await sbx.files.write(`${dir}/as-root.txt`, "r", { user: "root" });
    assert.equal(lstatSync(`${dir}/as-user.txt`).uid, idsOf("user").uid);
    assert.equal(lstatSync(`${dir}/as-root.txt`).uid, 0);
    const info = await sbx.files.getInfo(`${dir}/as-root.txt`);
    assert.equal(info.owner, "root");
    // user may not overwrite root's 0644 file.
    await assert.rejects(sbx.files.write(`${dir}/as-root.txt`, "hijack"), /403: permission denied/);
    assert.equal(readFileSync(`${dir}/as-root.txt`, "utf8"), "r");
  });

  test("a user cannot read or write under /root", async () => {
    const probe = `/root/nbx-files-probe-${process.pid}`;
    writeFileSync(probe, "secret");
    try {
      await assert.rejects(sbx.files.read(probe), /403: permission denied/);
      await assert.rejects(sbx.files.write(`/root/nbx-new-${process.pid}`, "x"), /403/);
      assert.equal(existsSync(`/root/nbx-new-${process.pid}`), false);
      assert.equal(await sbx.files.read(probe, { user: "root" }), "secret");
    } finally {
      execFileSync("rm", ["-f", probe]);
    }
  });

  test("an unknown username is a 400", async () => {
    const res = await rawRequest(envd, {
      method: "GET",
      path: `/files?path=/etc/hostname&username=no-such-user-nbx`,
      headers: auth,
    });
    assert.equal(res.status, 400);
    assert.equal(JSON.parse(res.body.toString()).code, 400);
  });
});

describe("signed URLs", () => {
  test("uploadUrl and downloadUrl work without the token header", async () => {
    const dir = userOwned("signed");
    const path = `${dir}/signed.txt`;
    const upload = await sbx.uploadUrl(path, { useSignatureExpiration: 60 });
    assert.match(upload, /signature=v1_/);
    const form = new FormData();
    form.append("file", new Blob(["via signed url"]), path);
    const up = await fetch(upload, { method: "POST", body: form });
    assert.equal(up.status, 200, await up.clone().text());
    const download = await sbx.downloadUrl(path, { useSignatureExpiration: 60 });
    const down = await fetch(download);
    assert.equal(down.status, 200);
    assert.equal(await down.text(), "via signed url");

    const asRoot = await sbx.downloadUrl(path, { user: "root" });
    assert.match(asRoot, /username=root/);
    assert.equal(await (await fetch(asRoot)).text(), "via signed url");

    // A read signature does not allow writing.
    const misuse = await fetch(download, { method: "POST", body: form });
    assert.equal(misuse.status, 401);
    assert.deepEqual(await misuse.json(), { code: 401, message: "invalid signature" });
  });

  test("an expired URL gets 401 with E2B's exact body", async () => {
    const url = await sbx.downloadUrl(`${tmp.path}/whatever`, { useSignatureExpiration: -10 });
    const res = await fetch(url);
    assert.equal(res.status, 401);
    assert.equal(await res.text(), '{"code":401,"message":"signature is already expired"}');
  });

  test("no token and no signature is 401", async () => {
    const res = await rawRequest(envd, { method: "GET", path: `/files?path=/etc/hostname` });
    assert.equal(res.status, 401);
    assert.deepEqual(JSON.parse(res.body.toString()), {
      code: 401,
      message: "missing signature or access token",
    });
  });
});

describe("upload edge cases", () => {
  test("two parts for the same destination are a 400", async () => {
    const dir = userOwned("dupe");
    const form = new FormData();
    form.append("file", new Blob(["a"]), `${dir}/same.txt`);
    form.append("file", new Blob(["b"]), `${dir}/same.txt`);
    const res = await fetch(`${envd.url}/files`, { method: "POST", body: form, headers: auth });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { code: number; message: string };
    assert.equal(body.code, 400);
    assert.match(body.message, /same path/);
    assert.equal(readFileSync(`${dir}/same.txt`, "utf8"), "a");
  });

  test("raw uploads need a path, unknown content types are refused", async () => {
    const noPath = await rawRequest(envd, {
      method: "POST",
      path: "/files",
      headers: { ...auth, "content-type": "application/octet-stream" },
      body: Buffer.from("x"),
    });
    assert.equal(noPath.status, 400);
    assert.match(JSON.parse(noPath.body.toString()).message, /path/);
    const odd = await rawRequest(envd, {
      method: "POST",
      path: `/files?path=${q(`${tmp.path}/odd`)}`,
      headers: { ...auth, "content-type": "text/plain" },
      body: Buffer.from("x"),
    });
    assert.equal(odd.status, 400);
  });

  test("an aborted upload leaves neither the destination nor a temp file", async () => {
    const dir = userOwned("abort");
    writeFileSync(`${dir}/keep.txt`, "original");
    execFileSync("chown", [`${idsOf("user").uid}`, `${dir}/keep.txt`]);
    for (const name of ["new.txt", "keep.txt"]) {
      await new Promise<void>((resolve) => {
        const req = request({
          host: "127.0.0.1",
          port: envd.port,
          method: "POST",
          path: `/files?path=${q(`${dir}/${name}`)}`,
          headers: {
            ...auth,
            "content-type": "application/octet-stream",
            "content-length": 1 << 20,
          },
        });
        req.on("error", () => resolve());
        req.write(Buffer.alloc(64 * 1024, 1));
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 200);
      });
    }
    // The server notices the abort asynchronously.
    for (let i = 0; i < 50 && readdirSync(dir).length !== 1; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(readdirSync(dir), ["keep.txt"]);
    assert.equal(readFileSync(`${dir}/keep.txt`, "utf8"), "original");
  });

  test("a full disk is 507 and leaves nothing behind", async () => {
    const mnt = tempDir("full");
    try {
      // The suite runs as root (it also creates users), so mounting a tiny tmpfs must work.
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt.path], {
        stdio: "ignore",
      });
      try {
        const res = await rawRequest(envd, {
          method: "POST",
          path: `/files?path=${q(`${mnt.path}/big.bin`)}&username=root`,
          headers: { ...auth, "content-type": "application/octet-stream" },
          body: Buffer.alloc(1024 * 1024, 7),
        });
        assert.equal(res.status, 507, res.body.toString());
        // The body was not read to the end: the connection must not be reused.
        assert.equal(res.headers.connection, "close");
        assert.equal(JSON.parse(res.body.toString()).code, 507);
        assert.deepEqual(readdirSync(mnt.path), []);
      } finally {
        execFileSync("umount", [mnt.path]);
      }
    } finally {
      mnt.cleanup();
    }
  });

  test("a huge header gets 431 and the server keeps serving", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connect(envd.port, "127.0.0.1", () => {
        sock.write(
          `GET /files?path=/etc/hostname HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20 * 1024)}\r\n\r\n`,
        );
      });
      let data = "";
      sock.on("data", (d) => {
        data += d.toString();
      });
      sock.setTimeout(5_000, () => {
        sock.destroy();
        reject(new Error(`no close after 5 s, got ${JSON.stringify(data.slice(0, 200))}`));
      });
      sock.on("close", () => resolve(data));
      sock.on("error", (err) => (data ? resolve(data) : reject(err)));
    });
    assert.match(reply, /^HTTP\/1\.1 431/);
    const health = await rawRequest(envd, { method: "GET", path: "/health" });
    assert.equal(health.status, 204);
  });
});

describe("memory", () => {
  const GiB = 1024 * 1024 * 1024;

  test("a 1 GiB upload and download stream without growing envd's memory", async () => {
    const dir = userOwned("huge");
    const pid = envd.child.pid as number;
    const chunk = Buffer.alloc(1024 * 1024, 0x5a);
    const baseline = memoryOf(pid).rss;

    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port: envd.port,
          method: "POST",
          path: `/files?path=${q(`${dir}/huge.bin`)}`,
          headers: { ...auth, "content-type": "application/octet-stream", "content-length": GiB },
        },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      let sent = 0;
      const source = new Readable({
        read() {
          if (sent >= GiB) {
            this.push(null);
            return;
          }
          sent += chunk.length;
          this.push(chunk);
        },
      });
      pipeline(source, req).catch(reject);
    });
    assert.equal(status, 200);
    assert.equal(lstatSync(`${dir}/huge.bin`).size, GiB);
    const afterUpload = memoryOf(pid);

    let received = 0;
    await new Promise<void>((resolve, reject) => {
      request(
        {
          host: "127.0.0.1",
          port: envd.port,
          path: `/files?path=${q(`${dir}/huge.bin`)}`,
          headers: auth,
        },
        (res) => {
          res.on("data", (d: Buffer) => {
            received += d.length;
          });
          res.on("end", resolve);
          res.on("error", reject);
        },
      )
        .on("error", reject)
        .end();
    });
    assert.equal(received, GiB);
    const afterDownload = memoryOf(pid);
    const growth = Math.max(afterUpload.hwm, afterDownload.hwm) - baseline;
    assert.ok(growth < 64 * 1024 * 1024, `RSS grew by ${Math.round(growth / 1048576)} MiB`);
  });
});
