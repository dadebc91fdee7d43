import type { EnvdContext } from "../context.js";
import type { HttpRoutes } from "./router.js";

// Placeholder until GET/POST /files land.
export function registerFileRoutes(_routes: HttpRoutes, _ctx: EnvdContext): void {}
