import { runtimeConformance } from "./runtime-conformance.js";

runtimeConformance({ runtime: "qemu", instance: "q", slots: "2000-2099", memorySnapshots: true });
