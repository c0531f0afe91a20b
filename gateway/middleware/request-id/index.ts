// Request id middleware: accepts a sane incoming X-Request-Id or generates one, and puts it on
// every response — including responses whose headers are immutable (upgrades, fetched bodies).
import type { MiddlewareHandler } from "hono";

export interface RequestIdOptions {
  headerName?: string;
  generator?: () => string;
  /** Incoming ids must match this; anything else is replaced (ids end up in logs and frames). */
  pattern?: RegExp;
}

export function requestId({
  headerName = "X-Request-Id",
  generator = () => crypto.randomUUID(),
  pattern = /^[A-Za-z0-9._:=-]{1,64}$/,
}: RequestIdOptions = {}): MiddlewareHandler<{ Variables: { requestId: string } }> {
  return async function requestId(c, next) {
    const incoming = c.req.header(headerName);
    // GET /* runs the middleware chain twice (Hono's TrieRouter matches a literal `*` segment as
    // well as the wildcard: honojs/hono#5370); the second run keeps the id the first one chose.
    const chosen = c.get("requestId") as string | undefined;
    const id = chosen ?? (incoming !== undefined && pattern.test(incoming) ? incoming : generator());
    c.set("requestId", id);
    c.header(headerName, id);
    await next();
    if (c.res.headers.get(headerName) === id) return;
    try {
      c.res.headers.set(headerName, id);
    } catch {
      // Headers of a Response obtained from fetch() (e.g. a Durable Object's 101) are immutable.
      const headers = new Headers(c.res.headers);
      headers.set(headerName, id);
      c.res = new Response(c.res.body, {
        status: c.res.status,
        statusText: c.res.statusText,
        headers,
        webSocket: c.res.webSocket,
      });
    }
  };
}
