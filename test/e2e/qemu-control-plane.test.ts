import { controlPlaneSuite } from "./support/control-plane-suite.js";

controlPlaneSuite({ runtime: "qemu", instance: "e", slots: "7000-7099", db: "pglite" });
