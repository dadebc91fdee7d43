import { runtimeConformance } from "./runtime-conformance.js";

runtimeConformance({
  runtime: "namespace",
  instance: "n",
  slots: "3000-3099",
  memorySnapshots: false,
});
