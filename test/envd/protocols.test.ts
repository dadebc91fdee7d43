import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { Process } from "@nestbox/proto/process";
import { type EnvdProcess, startEnvd } from "./support/harness.js";

// The E2B SDKs speak Connect+JSON; other clients may use the binary codec or gRPC-Web.
describe("envd wire protocols", () => {
  let envd: EnvdProcess;
  before(async () => {
    envd = await startEnvd();
  });
  after(() => envd.stop());

  const transports = {
    "Connect, binary codec": () =>
      createConnectTransport({ baseUrl: envd.url, httpVersion: "1.1", useBinaryFormat: true }),
    "Connect, JSON codec": () =>
      createConnectTransport({ baseUrl: envd.url, httpVersion: "1.1", useBinaryFormat: false }),
    "gRPC-Web, binary codec": () =>
      createGrpcWebTransport({ baseUrl: envd.url, httpVersion: "1.1", useBinaryFormat: true }),
  };

  for (const [name, make] of Object.entries(transports)) {
    it(`${name}: unary List and a server-streamed Start`, async () => {
      const client = createClient(Process, make());
      const list = await client.list({});
      assert.ok(Array.isArray(list.processes));
      let out = "";
      let end: { exitCode: number; status: string } | undefined;
      for await (const res of client.start({
        process: { cmd: "/bin/sh", args: ["-c", "printf '%s' \"$0\"", name] },
        stdin: false,
      })) {
        const ev = res.event?.event;
        if (ev?.case === "data" && ev.value.output.case === "stdout") {
          out += Buffer.from(ev.value.output.value).toString();
        }
        if (ev?.case === "end") end = { exitCode: ev.value.exitCode, status: ev.value.status };
      }
      assert.equal(out, name);
      assert.deepEqual(end, { exitCode: 0, status: "exit status 0" });
    });
  }
});
