// One structured log line per request, with its id, outcome and duration.
import type { MiddlewareHandler } from "hono";
import { log } from "../../log.ts";
import type { AppEnv } from "../../types.ts";

export function accessLog(): MiddlewareHandler<AppEnv> {
  return async function accessLog(c, next) {
    const started = Date.now();
    await next();
    const status = c.res.status;
    log(status >= 500 ? "error" : "info", "request", {
      requestId: c.get("requestId"),
      method: c.req.method,
      path: c.req.path,
      status,
      durationMs: Date.now() - started,
      sub: c.get("caller")?.sub,
      code: status >= 400 ? (c.res.headers.get("X-Error-Code") ?? undefined) : undefined,
    });
  };
}
