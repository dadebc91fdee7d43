import { Code, ConnectError } from "@connectrpc/connect";

/** Maps a Node.js system error (errno code) to the Connect code the E2B SDKs branch on. */
export function connectCodeForErrno(errno: string | undefined): Code {
  switch (errno) {
    case "ENOENT":
      return Code.NotFound;
    case "EEXIST":
    case "ENOTEMPTY":
      return Code.AlreadyExists;
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return Code.PermissionDenied;
    case "ENOTDIR":
    case "EISDIR":
    case "EINVAL":
    case "ENAMETOOLONG":
    case "ELOOP":
    case "EXDEV":
      return Code.InvalidArgument;
    case "ENOSPC":
    case "EDQUOT":
    case "EMFILE":
    case "ENFILE":
      return Code.ResourceExhausted;
    default:
      return Code.Internal;
  }
}

export function isErrnoException(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === "string";
}

/** Wraps any thrown value as a ConnectError, keeping ConnectErrors as they are. */
export function toConnectError(err: unknown, context?: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (isErrnoException(err)) {
    const prefix = context ? `${context}: ` : "";
    return new ConnectError(`${prefix}${describeErrno(err)}`, connectCodeForErrno(err.code));
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ConnectError(context ? `${context}: ${message}` : message, Code.Internal);
}

/** A short message without Node's syscall noise, e.g. "no such file or directory: /x". */
export function describeErrno(err: NodeJS.ErrnoException): string {
  const text: Record<string, string> = {
    ENOENT: "no such file or directory",
    EEXIST: "file already exists",
    ENOTEMPTY: "directory not empty",
    EACCES: "permission denied",
    EPERM: "operation not permitted",
    EROFS: "read-only file system",
    ENOTDIR: "not a directory",
    EISDIR: "is a directory",
    ENOSPC: "no space left on device",
  };
  const what = (err.code && text[err.code]) ?? err.message;
  return err.path ? `${what}: ${err.path}` : what;
}

/** An error for the plain HTTP endpoints: rendered as `{"code": status, "message": …}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function httpStatusForErrno(errno: string | undefined): number {
  switch (errno) {
    case "ENOENT":
      return 404;
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return 403;
    case "ENOSPC":
    case "EDQUOT":
      return 507;
    case "ENOTDIR":
    case "EISDIR":
    case "EINVAL":
    case "ENAMETOOLONG":
    case "EEXIST":
      return 400;
    default:
      return 500;
  }
}

export function toHttpError(err: unknown, context?: string): HttpError {
  if (err instanceof HttpError) return err;
  if (isErrnoException(err)) {
    const prefix = context ? `${context}: ` : "";
    return new HttpError(httpStatusForErrno(err.code), `${prefix}${describeErrno(err)}`);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new HttpError(500, context ? `${context}: ${message}` : message);
}
