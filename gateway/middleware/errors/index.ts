// The gateway's one error handler and its 404/405 handler: every error leaves in the same two
// shapes (OpenAI's on /v1/*, ErrorBody elsewhere) with a stable code; unknown errors leak nothing.
import type { Context, ErrorHandler, NotFoundHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ErrorCode } from "../../../schema/api.ts";
import {
  errorBody,
  GatewayError,
  INTERNAL_MESSAGE,
  isOpenAIPath,
  openAIErrorBody,
  STATUS_BY_CODE,
} from "../../errors.ts";
import { describeError, log } from "../../log.ts";
import type { AppEnv } from "../../types.ts";

/** Renders a GatewayError as the response its route family expects. */
export function errorResponse(c: Context<AppEnv>, err: GatewayError): Response {
  const requestId = c.get("requestId") ?? "unknown";
  const body = isOpenAIPath(c.req.path) ? openAIErrorBody(err) : errorBody(err, requestId);
  return c.json(body, err.status, { ...err.headers, "X-Error-Code": err.code });
}

export function errorHandler(): ErrorHandler<AppEnv> {
  return (err, c) => {
    const gatewayError = toGatewayError(err);
    const fields = { requestId: c.get("requestId"), path: c.req.path, code: gatewayError.code };
    // Only an unknown error is a bug worth a stack; a known 5xx (no agent, upstream failure,
    // timeout) is a condition of the fleet, and the access log line already records its code.
    if (gatewayError.code === "INTERNAL")
      log("error", "request failed", { ...fields, ...describeError(err) });
    else if (gatewayError.status >= 500) log("warn", "request failed", fields);
    return errorResponse(c, gatewayError);
  };
}

function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  // Hono's own helpers throw HTTPException; keep their status but give it a stable code.
  if (err instanceof HTTPException && err.status < 500) {
    const code = codeForStatus(err.status);
    return new GatewayError(code, err.message || code.toLowerCase().replaceAll("_", " "));
  }
  return new GatewayError("INTERNAL", INTERNAL_MESSAGE, { cause: err });
}

function codeForStatus(status: number): ErrorCode {
  const match = (Object.entries(STATUS_BY_CODE) as [ErrorCode, number][]).find(([, s]) => s === status);
  return match?.[0] ?? "INVALID_REQUEST";
}

export interface KnownRoute {
  method: string;
  path: string;
}

/**
 * 404 for unknown paths, 405 (with Allow) for known paths called with another method. `routes` is
 * read per request so routes mounted after this handler was created are seen.
 */
export function notFoundHandler(routes: () => readonly KnownRoute[]): NotFoundHandler<AppEnv> {
  return (c) => {
    const allowed = routes()
      .filter((r) => r.method !== "ALL" && r.path === c.req.path)
      .map((r) => r.method);
    if (allowed.length > 0) {
      const allow = [...new Set(allowed.includes("GET") ? [...allowed, "HEAD"] : allowed)].join(", ");
      return errorResponse(
        c,
        new GatewayError("METHOD_NOT_ALLOWED", `${c.req.method} is not allowed on ${c.req.path}`, {
          headers: { Allow: allow },
        }),
      );
    }
    return errorResponse(c, new GatewayError("NOT_FOUND", `no route for ${c.req.method} ${c.req.path}`));
  };
}
