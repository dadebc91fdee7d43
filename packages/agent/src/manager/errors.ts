import { RuntimeError } from "../runtime/runtime.js";

/**
 * What went wrong, for a machine: the runtime's codes plus the manager's own. Only the RPC face
 * (`src/rpc-errors.ts`) turns a code into a transport status; the manager knows no transport.
 */
export type AgentErrorCode = RuntimeError["code"] | "already_exists";

/** The manager's domain error: a stable code and a message for people. */
export class AgentError extends Error {
  override readonly name = "AgentError";

  constructor(
    readonly code: AgentErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A typed failure of the agent's own layers (manager or runtime), as opposed to anything else. */
export function isDomainError(err: unknown): err is AgentError | RuntimeError {
  return err instanceof AgentError || err instanceof RuntimeError;
}

export const notFound = (id: string) => new AgentError("not_found", `sandbox ${id} not found`);
export const invalid = (msg: string) => new AgentError("invalid_argument", msg);
export const precondition = (msg: string) => new AgentError("failed_precondition", msg);
export const exhausted = (msg: string) => new AgentError("resource_exhausted", msg);
export const alreadyExists = (msg: string) => new AgentError("already_exists", msg);
