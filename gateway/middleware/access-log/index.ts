// One structured log line per request, with its id, outcome and duration.
import type { MiddlewareHandler } from "hono";
import { type LogLevel, log } from "../../log.ts";
import type { AppEnv } from "../../types.ts";

/** Probes are polled constantly: debug. A 500 is a bug: error. Other 5xx are conditions: warn. */
function levelFor(path: string, status: number): LogLevel {
  if (path === "/health" || path === "/ready") return "debug";
  if (status === 500) return "error";
  return status >= 500 ? "warn" : "info";
}

export function accessLog(): MiddlewareHandler<AppEnv> {
  return async function accessLog(c, next) {
    const started = Date.now();
    await next();
    const status = c.res.status;
    log(levelFor(c.req.path, status), "request", {
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
