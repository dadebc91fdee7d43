/**
 * Sandbox ids (DNS labels in `{port}-{id}.{domain}`, the form the E2B SDKs expect) and template
 * names (directory names): the formats every package shares, from @nestbox/wire.
 */
export { newSandboxId, SANDBOX_ID_RE, TEMPLATE_NAME_RE } from "@nestbox/wire";
