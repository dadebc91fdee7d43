import { runtimeConformance } from "./support/runtime-conformance.js";
import { warmPoolConformance } from "./support/warm-pool-suite.js";

runtimeConformance({ runtime: "qemu", instance: "q", slots: "2000-2099", memorySnapshots: true });
warmPoolConformance({ runtime: "qemu", instance: "g", slots: "2100-2149" });
