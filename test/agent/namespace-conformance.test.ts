import { runtimeConformance } from "./support/runtime-conformance.js";
import { warmPoolConformance } from "./support/warm-pool-suite.js";

runtimeConformance({
  runtime: "namespace",
  instance: "n",
  slots: "3000-3099",
  memorySnapshots: false,
});
warmPoolConformance({ runtime: "namespace", instance: "o", slots: "3100-3149" });
