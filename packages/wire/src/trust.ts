/**
 * Names both ends of the control plane ↔ agent link agree on (mutual TLS). The control plane's
 * client certificate carries CONTROL_PLANE_CN and the clientAuth purpose; a host's server
 * certificate carries its host id as the common name and only the serverAuth purpose, so a
 * host's certificate can never pass as the control plane's.
 */
export const CONTROL_PLANE_CN = "nestbox-control-plane";
export const HOST_ORGANIZATION = "nestbox-host";
export const EKU_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
/** The header a standalone agent (no control plane) requires: the token from its 0600 file. */
export const AGENT_TOKEN_HEADER = "x-nestbox-agent-token";
