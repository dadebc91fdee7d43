import type { IncomingMessage, ServerResponse } from "node:http";

export type HttpHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>;

/** The plain-HTTP side of envd: a handful of fixed paths, so a map beats a router library. */
export class HttpRoutes {
  private readonly routes = new Map<string, Map<string, HttpHandler>>();

  add(method: string, pathname: string, handler: HttpHandler): this {
    let byMethod = this.routes.get(pathname);
    if (!byMethod) {
      byMethod = new Map();
      this.routes.set(pathname, byMethod);
    }
    byMethod.set(method, handler);
    return this;
  }

  /** The handler, "method" if the path exists with other methods, or undefined. */
  match(method: string, pathname: string): HttpHandler | "method" | undefined {
    const byMethod = this.routes.get(pathname);
    if (!byMethod) return undefined;
    const h = byMethod.get(method) ?? (method === "HEAD" ? byMethod.get("GET") : undefined);
    return h ?? "method";
  }

  allowed(pathname: string): string[] {
    return [...(this.routes.get(pathname)?.keys() ?? [])];
  }
}
