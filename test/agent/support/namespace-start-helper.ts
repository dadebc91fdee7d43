// Child process of namespace-runtime.test.ts standing in for an agent that crashes: starts one
// sandbox, prints its RuntimeState as one JSON line, then idles until it is SIGKILLed.
//
//   node --import tsx test/agent/namespace-start-helper.ts '<options JSON>' '<SandboxSpec JSON>'
import { NamespaceRuntime } from "../../../packages/agent/src/runtime/namespace/runtime.js";
import type { SandboxSpec } from "../../../packages/agent/src/runtime/runtime.js";

const [optionsJson, specJson] = process.argv.slice(2);
if (!optionsJson || !specJson) {
  process.stderr.write("usage: namespace-start-helper.ts OPTIONS_JSON SPEC_JSON\n");
  process.exit(2);
}
const options = JSON.parse(optionsJson) as {
  nestboxDir: string;
  cgroupParent: string;
  pidsMax: number;
};
const runtime = new NamespaceRuntime(options);
const state = await runtime.start(JSON.parse(specJson) as SandboxSpec);
process.stdout.write(`${JSON.stringify(state)}\n`);
// Keep the event loop alive: only a signal ends this process.
setInterval(() => undefined, 60_000);
