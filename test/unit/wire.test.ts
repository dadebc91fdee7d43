/**
 * @nestbox/wire: E2B's v1 file signature (checked against a digest computed here with
 * node:crypto, and a fixed vector), the sandbox-id and template-name patterns. Pure, fast.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { fileSignature, newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "@nestbox/wire";
import {
  checkFileAccess,
  fileSignature as envdFileSignature,
} from "../../packages/envd/src/auth.js";
import { EnvdState } from "../../packages/envd/src/state.js";
import {
  parseSignedFilesRequest,
  fileSignature as serverFileSignature,
  signedWith,
} from "../../packages/server/src/proxy/signature.js";

/** The format from E2B's docs, built independently of the code under test. */
const expected = (text: string) =>
  `v1_${createHash("sha256").update(text).digest("base64").replace(/=+$/, "")}`;

describe("fileSignature", () => {
  it("is v1_ + unpadded base64(sha256(path:op:user:token))", () => {
    const sig = fileSignature("/home/user/hello.txt", "read", "user", "secret-token");
    assert.equal(sig, expected("/home/user/hello.txt:read:user:secret-token"));
    assert.equal(sig, "v1_c9DAw9sRuTzapp+n1lR30itW22vp4AsnvCE3ncoJU2c");
    assert.doesNotMatch(sig, /=/);
  });

  it("appends the expiration, given as a number or as the URL's string", () => {
    const want = "v1_1HawuF6T3c99cvO6xRiSx3XnmeVDujBERcxMvfxpyCI";
    assert.equal(want, expected("/home/user/hello.txt:write:root:secret-token:1767225600"));
    assert.equal(
      fileSignature("/home/user/hello.txt", "write", "root", "secret-token", 1767225600),
      want,
    );
    assert.equal(
      fileSignature("/home/user/hello.txt", "write", "root", "secret-token", "1767225600"),
      want,
    );
  });

  it("differs when any part differs", () => {
    const base = fileSignature("/a", "read", "user", "t");
    assert.notEqual(fileSignature("/a", "write", "user", "t"), base);
    assert.notEqual(fileSignature("/b", "read", "user", "t"), base);
    assert.notEqual(fileSignature("/a", "read", "root", "t"), base);
    assert.notEqual(fileSignature("/a", "read", "user", "u"), base);
    assert.notEqual(fileSignature("/a", "read", "user", "t", 1), base);
  });

  it("is the one envd and the control plane's proxy use", () => {
    assert.equal(envdFileSignature, fileSignature);
    assert.equal(serverFileSignature, fileSignature);
  });

  it("a URL the proxy accepts is one envd accepts", () => {
    const token = "secret-token";
    const exp = 4102444800; // 2100-01-01
    const sig = fileSignature("/tmp/x", "write", "user", token, exp);
    const url = `/files?path=%2Ftmp%2Fx&username=user&signature=${encodeURIComponent(sig)}&signature_expiration=${exp}`;
    const req = parseSignedFilesRequest("POST", url);
    assert.ok(req);
    assert.equal(signedWith(req, token), true);
    assert.equal(signedWith(req, "other-token"), false);
    const check = (signature: string) =>
      checkFileAccess(new EnvdState({ defaultUser: "user", accessToken: token }), {
        headerToken: undefined,
        path: "/tmp/x",
        operation: "write",
        username: "user",
        signature,
        signatureExpiration: String(exp),
      });
    assert.deepEqual(check(sig), { ok: true });
    assert.deepEqual(check(`${sig}x`), { ok: false, message: "invalid signature" });
  });
});

describe("SANDBOX_ID_RE and newSandboxId", () => {
  it("accepts 20 characters of [a-z0-9] only", () => {
    assert.match("abcdefghij0123456789", SANDBOX_ID_RE);
    for (const bad of [
      "",
      "abc",
      "abcdefghij012345678",
      "abcdefghij01234567890",
      "ABCDEFGHIJ0123456789",
      "abcdefghij012345678-",
      "abcdefghij012345678_",
    ])
      assert.doesNotMatch(bad, SANDBOX_ID_RE, bad);
  });

  it("new ids match and do not repeat", () => {
    const ids = new Set(Array.from({ length: 500 }, newSandboxId));
    assert.equal(ids.size, 500);
    for (const id of ids) assert.match(id, SANDBOX_ID_RE);
  });
});

describe("TEMPLATE_NAME_RE", () => {
  it("accepts lowercase names of 1-63 characters starting with a letter or digit", () => {
    for (const ok of ["base", "b", "0", "my-template_1.2", "a".repeat(63)])
      assert.match(ok, TEMPLATE_NAME_RE, ok);
  });

  it("rejects what could not be a directory name or path segment", () => {
    for (const bad of [
      "",
      "-x",
      ".x",
      "_x",
      "Base",
      "a/b",
      "a b",
      "..",
      "a".repeat(64),
      "x~2c512m",
    ])
      assert.doesNotMatch(bad, TEMPLATE_NAME_RE, bad);
  });
});
