// A throwaway network namespace for template work (booting a template, re-snapshotting one):
// only a TAP device with the guest's gateway address, no veth and no NAT, so it needs no slot
// from the sandbox address plan. The guest's virtio-net must sit on a TAP during the snapshot
// because the offload features a TAP offers are part of the device state clones load. The
// host cannot reach the guest from outside, so health checks run a small Node script inside.
import { randomBytes } from "node:crypto";
import {
  GATEWAY_ADDRESS,
  GATEWAY_MAC,
  GUEST_ADDRESS,
  GUEST_PREFIX_LENGTH,
  netnsExec,
} from "../../network/netns.js";
import { RuntimeError } from "../runtime.js";
import { ENVD_PORT } from "./envd.js";
import { runCommand } from "./process.js";

export interface ScratchNet {
  namespace: string;
  tap: string;
}

export async function createScratchNet(): Promise<ScratchNet> {
  const namespace = `nbxtpl-${randomBytes(4).toString("hex")}`;
  const tap = "tap0";
  await runCommand(["ip", "netns", "add", namespace]);
  try {
    const inNs = (args: string[]) => ["ip", "-n", namespace, ...args];
    await runCommand(inNs(["link", "set", "lo", "up"]));
    await runCommand(inNs(["tuntap", "add", "dev", tap, "mode", "tap"]));
    // The gateway MAC the template's guest learns is the one every clone's TAP will have.
    await runCommand(inNs(["link", "set", "dev", tap, "address", GATEWAY_MAC]));
    await runCommand(
      inNs(["addr", "add", `${GATEWAY_ADDRESS}/${GUEST_PREFIX_LENGTH}`, "dev", tap]),
    );
    await runCommand(inNs(["link", "set", tap, "up"]));
  } catch (error) {
    // The setup error is the one to report; a namespace that cannot be removed either would
    // show up in the same way on the next attempt.
    await destroyScratchNet({ namespace, tap }).catch(() => undefined);
    throw error;
  }
  return { namespace, tap };
}

export async function destroyScratchNet(net: ScratchNet): Promise<void> {
  const { stdout } = await runCommand(["ip", "netns", "list"]);
  if (stdout.split("\n").some((line) => line.split(" ")[0] === net.namespace)) {
    await runCommand(["ip", "netns", "delete", net.namespace]);
  }
}

// Polls envd's /health from inside the namespace, then makes the calls the host agent makes
// first in every new sandbox — POST /init, then process starts in Connect's binary codec as the
// default user and as root — so envd's code for them is already compiled (V8 bytecode) in the
// memory snapshot every clone starts from, instead of being parsed and compiled in each clone.
const HEALTH_SCRIPT = `
const [url, deadlineMs] = [process.argv[1], Number(process.argv[2])];
const end = Date.now() + deadlineMs;
let last = "";
const post = async (path, headers, body) => {
  const res = await fetch(url + path, { method: "POST", headers, body, signal: AbortSignal.timeout(30000) });
  await res.arrayBuffer();
  if (res.status >= 300) throw new Error(path + ": HTTP " + res.status);
};
// StartRequest{process: ProcessConfig{cmd: "/bin/true"}, stdin: false}, protobuf binary.
const cmd = Buffer.from("/bin/true");
const config = Buffer.concat([Buffer.from([0x0a, cmd.length]), cmd]);
const start = Buffer.concat([Buffer.from([0x0a, config.length]), config, Buffer.from([0x20, 0x00])]);
const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, start.length]), start]);
(async () => {
  for (;;) {
    try {
      const res = await fetch(url + "/health", { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 204 || res.status === 200) break;
      last = "HTTP " + res.status;
    } catch (e) { last = String(e && e.cause ? e.cause.message : e); }
    if (Date.now() > end) { console.error("no /health: " + last); process.exit(2); }
    await new Promise((r) => setTimeout(r, 100));
  }
  for (let i = 0; i < 2; i++) {
    // No access token: a clone's /init installs its own (envd refuses to replace one without it).
    await post("/init", { "content-type": "application/json" },
      JSON.stringify({ envVars: {}, defaultUser: "user", timestamp: new Date().toISOString() }));
    for (const user of ["user", "root"]) {
      await post("/process.Process/Start", {
        "content-type": "application/connect+proto",
        "connect-protocol-version": "1",
        authorization: "Basic " + Buffer.from(user + ":").toString("base64"),
      }, envelope);
    }
  }
})().catch((e) => { console.error(String(e)); process.exit(3); });
`;

/** Waits (inside the namespace) for envd in the guest; throws with the script's complaint. */
export async function waitForGuestEnvd(net: ScratchNet, timeoutMs: number): Promise<void> {
  const url = `http://${GUEST_ADDRESS}:${ENVD_PORT}`;
  try {
    await runCommand(
      netnsExec(net.namespace, [process.execPath, "-e", HEALTH_SCRIPT, url, String(timeoutMs)]),
      { timeoutMs: timeoutMs + 60_000 },
    );
  } catch (error) {
    throw new RuntimeError("unavailable", `template guest: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
