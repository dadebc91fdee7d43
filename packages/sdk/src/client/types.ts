import type { components, paths } from "./api-types.js";

/** Names for the generated OpenAPI schemas (packages/sdk/openapi/openapi.json). */
type Schemas = components["schemas"];
type Json<R> = R extends { content: { "application/json": infer T } } ? T : never;

export type Sandbox = Schemas["Sandbox"];
export type SandboxStatus = Sandbox["status"];
export type CreateSandboxRequest = Schemas["CreateSandbox"];
export type Template = Schemas["Template"];
export type ExecRequest = Schemas["ExecRequest"];
export type ExecResult = Schemas["ExecResult"];
export type StartProcessRequest = Schemas["StartProcessRequest"];
export type ProcessInfo = Schemas["Process"];
export type FileEntry = Schemas["FileEntry"];
export type SandboxMetrics = Json<paths["/v1/sandboxes/{id}/metrics"]["get"]["responses"][200]>;
export type MetricsRange = NonNullable<
  NonNullable<paths["/v1/sandboxes/{id}/metrics"]["get"]["parameters"]["query"]>["range"]
>;
export type SandboxPage = Json<paths["/v1/sandboxes"]["get"]["responses"][200]>;
