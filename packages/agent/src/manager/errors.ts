import { Code, ConnectError } from "@connectrpc/connect";
import { RuntimeError } from "../runtime/runtime.js";

const RUNTIME_CODES: Record<RuntimeError["code"], Code> = {
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  invalid_argument: Code.InvalidArgument,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

/** Every error leaving the agent's RPC surface is a ConnectError with a fitting code. */
export function toConnect(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof RuntimeError) return new ConnectError(err.message, RUNTIME_CODES[err.code]);
  return new ConnectError(err instanceof Error ? err.message : String(err), Code.Internal);
}

export const notFound = (id: string) => new ConnectError(`sandbox ${id} not found`, Code.NotFound);
export const invalid = (msg: string) => new ConnectError(msg, Code.InvalidArgument);
export const precondition = (msg: string) => new ConnectError(msg, Code.FailedPrecondition);
