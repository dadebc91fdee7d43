import { z } from "zod";
import { ENV_NAME_RE, stringMap } from "../api/schemas.js";
import { TEMPLATE_NAME_RE } from "../ids.js";

/**
 * Request bodies of the E2B routes. Objects are not strict: newer SDKs send fields Nestbox does
 * not implement (mcp, iam, volumeMounts, network rules…) and those are ignored, not rejected.
 */

const MAX_TIMEOUT_SEC = 86400 * 30;
const timeout = z
  .number()
  .int("must be a whole number of seconds")
  .min(0)
  .max(MAX_TIMEOUT_SEC, `at most ${MAX_TIMEOUT_SEC} seconds`);

const NewSandboxBase = z.object({
  templateID: z.string().regex(TEMPLATE_NAME_RE, "must be a template name or alias").optional(),
  timeout: timeout.optional(),
  metadata: stringMap(64, 1024).nullish(),
  envVars: stringMap(256, 32768)
    .refine(
      (m) => Object.keys(m).every((k) => ENV_NAME_RE.test(k)),
      "names must be [A-Za-z_][A-Za-z0-9_]*",
    )
    .nullish(),
  allow_internet_access: z.boolean().nullish(),
  autoPause: z.boolean().nullish(),
  autoResume: z.object({ enabled: z.boolean() }).nullish(),
  network: z
    .object({
      allowPublicTraffic: z.boolean().nullish(),
      denyOut: z.array(z.string()).nullish(),
    })
    .nullish(),
});

/** `NewSandboxV2` (POST /v2/sandboxes). */
export const NewSandboxV2 = NewSandboxBase;
/** `NewSandbox` (POST /sandboxes, SDKs ≤ 2.50): also `secure`, which asks for an envd token. */
export const NewSandboxV1 = NewSandboxBase.extend({ secure: z.boolean().nullish() });
export type NewSandboxBody = z.infer<typeof NewSandboxV1>;

/** `ConnectSandbox` / `ConnectSandboxV2`; `memory: false` (reboot) is not supported. */
export const ConnectBody = z.object({ timeout: timeout.optional(), memory: z.boolean().nullish() });
/** `ResumedSandbox` (SDK 2.0–2.5). */
export const ResumeBody = z.object({
  timeout: timeout.optional(),
  autoPause: z.boolean().nullish(),
});
/** `SandboxTimeoutRequest`. */
export const TimeoutBody = z.object({ timeout });
/** `SandboxPauseRequest`: `{}` or `{memory}`; a pause always keeps memory here. */
export const PauseBody = z.object({ memory: z.boolean().nullish() });

/** Unix seconds in a query string. */
export const unixSeconds = z.coerce.number().int().min(0).max(1e11);
