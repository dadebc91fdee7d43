export { newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "./ids.js";
export { type FileOperation, fileSignature } from "./signature.js";
