/**
 * Every failure of a control-plane call, mapped in one place: the HTTP status and the stable
 * `code` of the API's `{"error":{"code","message"}}` body. Callers branch on `code`.
 */
export class NestboxApiError extends Error {
  override name = "NestboxApiError";

  constructor(
    /** HTTP status; 0 when no response arrived (the control plane could not be reached). */
    readonly status: number,
    /** The API's error code (`not_found`, `invalid_state`, …), or `unreachable` / `http_<status>`. */
    readonly code: string,
    message: string,
    /** The request field a 400 is about, when the API names one. */
    readonly field?: string,
  ) {
    super(message);
  }
}

interface ErrorBody {
  error?: { code?: unknown; message?: unknown; field?: unknown };
}

/** The error a non-2xx response stands for, from its parsed body (if it was one of ours). */
export function apiErrorFrom(status: number, body: unknown, statusText = ""): NestboxApiError {
  const e = (body as ErrorBody | undefined)?.error;
  if (e && typeof e.code === "string" && typeof e.message === "string") {
    return new NestboxApiError(
      status,
      e.code,
      e.message,
      typeof e.field === "string" ? e.field : undefined,
    );
  }
  const text = typeof body === "string" && body.trim() ? body.trim().slice(0, 200) : statusText;
  return new NestboxApiError(status, `http_${status}`, text || `HTTP ${status}`);
}

/** Reads a failed response's body and maps it. */
export async function apiErrorFromResponse(res: Response): Promise<NestboxApiError> {
  let text = "";
  try {
    text = await res.text();
  } catch (err) {
    text = `(body unreadable: ${err instanceof Error ? err.message : String(err)})`;
  }
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON (a proxy's HTML page, say): keep the text for the message.
  }
  return apiErrorFrom(res.status, body, res.statusText);
}

/** A fetch that never got a response (refused, DNS, TLS) as an `unreachable` error. */
export function unreachable(apiUrl: string, err: unknown): NestboxApiError {
  const cause = (err as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  const detail =
    cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
  return new NestboxApiError(
    0,
    "unreachable",
    `cannot reach the control plane at ${apiUrl} (${detail})`,
  );
}
