import { controlPlaneSuite } from "./support/control-plane-suite.js";

controlPlaneSuite({ runtime: "namespace", instance: "m", slots: "7100-7199", db: "postgres" });
