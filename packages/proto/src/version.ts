/**
 * The Nestbox release version: the one source for `nestbox version`, the control plane's
 * `/health` and OpenAPI `info.version`, and the version a host agent registers with. It lives
 * in this leaf package because every daemon already depends on it. The workspace package.json
 * versions are kept equal to it (test/unit/version.test.ts checks).
 */
export const NESTBOX_VERSION = "0.1.0";
