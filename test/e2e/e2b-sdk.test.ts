/**
 * Issue 5's acceptance: the real npm `e2b` SDK, newest (2.51, /v2 routes) and 2.4.2 (v1 routes:
 * POST /sandboxes, connect as POST …/timeout then POST …/resume), against Nestbox with the qemu
 * runtime.
 *
 * "Against ./nestbox up": startStack runs the same code `nestbox up` runs — startServer with
 * allInOne (the same seeding: admin team and key file, the `base` template, the local agent's
 * registration token) and a real host agent process registered the normal way — on free ports
 * and a throwaway data directory instead of the machine's.
 */
import { createRequire } from "node:module";
import net from "node:net";
import { after, before, describe } from "node:test";
import * as e2b from "e2b";
import * as e2bV24 from "e2b-v24";
import { Agent, buildConnector, setGlobalDispatcher } from "undici";
import { type Stack, startStack } from "./support/control-plane-harness.js";
import { e2bSdkCases, type SdkModule, type SuiteTarget } from "./support/e2b-sdk-suite.js";

/**
 * Stands in for wildcard DNS and a TLS-terminating front for SDKs older than 2.7, which have no
 * `sandboxUrl` and always call `https://{port}-{id}.{domain}`: connections to such a host go to
 * the control plane, in plain HTTP/1.1, keeping the Host header, so the proxy routes them by host
 * name as it would behind real DNS. The newest SDK uses its own connection pool and `sandboxUrl`,
 * so this only affects the old one (and plain `fetch`).
 */
function routeSandboxHostsTo(apiUrl: string): void {
  const cp = new URL(apiUrl);
  const direct = buildConnector({});
  setGlobalDispatcher(
    new Agent({
      connect(opts, callback) {
        if (!/^\d+-[a-z0-9]+\./.test(opts.hostname)) {
          direct(opts, callback);
          return;
        }
        const socket = net.connect(Number(cp.port), cp.hostname);
        socket.once("connect", () => callback(null, socket));
        socket.once("error", (err) => callback(err, null));
      },
    }),
  );
}

const require = createRequire(import.meta.url);

describe("E2B SDK against Nestbox (qemu runtime)", { concurrency: false }, () => {
  let stack: Stack | undefined;
  const target: SuiteTarget = { apiUrl: "" };

  before(async () => {
    stack = await startStack({ runtime: "qemu", instance: "j", slots: "7800-7899", db: "pglite" });
    target.apiUrl = stack.apiUrl;
    // What a user sets (README "Use the E2B SDK with Nestbox"): the admin key file holds
    // nbx_<hex>; the E2B spelling of the same key is e2b_<hex>. API and proxy share one origin.
    process.env.E2B_API_URL = stack.apiUrl;
    process.env.E2B_SANDBOX_URL = stack.apiUrl;
    process.env.E2B_API_KEY = `e2b_${stack.adminKey.replace(/^nbx_/, "")}`;
    routeSandboxHostsTo(stack.apiUrl);
  });
  after(async () => {
    await stack?.close();
  });

  e2bSdkCases(target, {
    name: `e2b ${e2bVersion("e2b")} (v2 routes, sandboxUrl)`,
    sdk: e2b,
    connectNeverShrinks: true,
    hasWriteFiles: true,
    hasPause: true,
    notFoundName: "SandboxNotFoundError",
  });
  e2bSdkCases(target, {
    name: `e2b ${e2bVersion("e2b-v24")} (v1 routes, host-name routing)`,
    // 2.4's types differ in places the suite does not touch or guards with the flags below.
    sdk: e2bV24 as unknown as SdkModule,
    connectNeverShrinks: false,
    hasWriteFiles: false,
    hasPause: false,
    notFoundName: "NotFoundError",
  });
});

function e2bVersion(pkg: string): string {
  const manifest = require(`${pkg}/package.json`) as { version: string };
  return manifest.version;
}
