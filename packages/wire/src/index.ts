export { newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "./ids.js";
export { type FileOperation, fileSignature } from "./signature.js";
export {
  AGENT_TOKEN_HEADER,
  CONTROL_PLANE_CN,
  EKU_CLIENT_AUTH,
  EKU_SERVER_AUTH,
  HOST_ORGANIZATION,
} from "./trust.js";
