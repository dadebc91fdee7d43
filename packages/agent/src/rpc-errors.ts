import { Code, ConnectError } from "@connectrpc/connect";
import { type AgentErrorCode, isDomainError } from "./manager/errors.js";

/** Each domain code's Connect status: the one place the two vocabularies meet. */
export const CONNECT_CODES: Readonly<Record<AgentErrorCode, Code>> = {
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  invalid_argument: Code.InvalidArgument,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  internal: Code.Internal,
};

/**
 * Every error leaving the agent's RPC surface is a ConnectError with a fitting code: domain
 * errors by their code, envd's (already Connect) as they are, anything else `Internal`.
 */
export function toConnect(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (isDomainError(err))
    return new ConnectError(err.message, CONNECT_CODES[err.code], undefined, undefined, err);
  return new ConnectError(err instanceof Error ? err.message : String(err), Code.Internal);
}

/**
 * For calls passed through to envd: domain errors by their code, anything else as Connect reads
 * it (an abort is `Canceled`, a stray error `Unknown`), as envd's own client would report it.
 */
export function toConnectFromEnvd(err: unknown): ConnectError {
  return isDomainError(err) ? toConnect(err) : ConnectError.from(err);
}

/** Runs `fn`, turning every failure into a ConnectError with `convert`. */
export async function guard<T>(
  fn: () => Promise<T>,
  convert: (err: unknown) => ConnectError = toConnect,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw convert(err);
  }
}

/** `guard` for a server-streaming RPC: also what its generator throws before the first yield. */
export async function* guardStream<T>(
  gen: () => AsyncIterable<T>,
  convert: (err: unknown) => ConnectError = toConnect,
): AsyncGenerator<T> {
  try {
    yield* gen();
  } catch (err) {
    throw convert(err);
  }
}
