// CORS for browser clients (CORS_ORIGINS). Hono's cors() was the first choice; it does not fit two
// needs: request headers allowed by a rule (X-Orchard-*, not a fixed list: Access-Control-Allow-
// Headers cannot hold a wildcard next to Authorization), and nothing at all for an origin that is
// not allowed (it sends Allow-Credentials and Expose-Headers to any). So this one:
// - a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered 204 here,
//   before auth, with the methods and the requested headers that are allowed;
// - an allowed origin gets Access-Control-Allow-Origin (its own, or "*" when CORS_ORIGINS is "*"),
//   the exposed headers and, with a list of origins, Allow-Credentials when CORS_CREDENTIALS says;
// - Vary: Origin whenever the answer depends on the origin (a list, not "*").
import type { MiddlewareHandler } from "hono";
import { readSecurityConfig } from "../../security/config.ts";
import type { AppEnv } from "../../types.ts";

export const CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] as const;
/** Request headers a browser may send: these, and any X-Orchard-* header. */
export const CORS_REQUEST_HEADERS = ["authorization", "content-type", "x-request-id"] as const;
export const CORS_EXPOSED_HEADERS = [
  "X-Request-Id",
  "X-Orchard-Model",
  "X-Orchard-Variant",
  "X-Orchard-Experiment",
  "X-Orchard-Fallback",
  "X-Error-Code",
  "RateLimit",
  "RateLimit-Policy",
  "Retry-After",
  "Deprecation",
] as const;
/** How long a browser may reuse a preflight's answer (s). */
export const CORS_MAX_AGE_SECONDS = 600;

const ALLOWED_HEADER = /^x-orchard-[a-z0-9-]{1,64}$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;

export function cors(): MiddlewareHandler<AppEnv> {
  const exposed = CORS_EXPOSED_HEADERS.join(", ");
  const methods = CORS_METHODS.join(", ");
  return async function cors(c, next) {
    const config = readSecurityConfig(c.env).cors;
    if (!config.anyOrigin && config.origins.size === 0) return next();
    const origin = c.req.header("Origin");
    const allowed = origin !== undefined && (config.anyOrigin || config.origins.has(origin));
    const requestedMethod = c.req.header("Access-Control-Request-Method");
    if (c.req.method === "OPTIONS" && origin !== undefined && requestedMethod !== undefined) {
      const headers = new Headers();
      if (!config.anyOrigin) headers.append("Vary", "Origin");
      headers.append("Vary", "Access-Control-Request-Method");
      headers.append("Vary", "Access-Control-Request-Headers");
      if (allowed) {
        headers.set("Access-Control-Allow-Origin", config.anyOrigin ? "*" : origin);
        if (config.credentials) headers.set("Access-Control-Allow-Credentials", "true");
        headers.set("Access-Control-Allow-Methods", methods);
        const requested = allowedRequestHeaders(c.req.header("Access-Control-Request-Headers"));
        if (requested !== "") headers.set("Access-Control-Allow-Headers", requested);
        headers.set("Access-Control-Max-Age", String(CORS_MAX_AGE_SECONDS));
      }
      // A refused preflight is a 204 without Allow-Origin: the browser then refuses the request.
      return new Response(null, { status: 204, headers });
    }
    await next();
    const set = (name: string, value: string, append = false) => {
      try {
        if (append) c.res.headers.append(name, value);
        else c.res.headers.set(name, value);
      } catch {
        // Headers of an upgrade's 101 (from a Durable Object) are immutable: browsers ignore CORS there.
      }
    };
    if (!config.anyOrigin) set("Vary", "Origin", true);
    if (!allowed) return;
    set("Access-Control-Allow-Origin", config.anyOrigin ? "*" : origin);
    if (config.credentials) set("Access-Control-Allow-Credentials", "true");
    set("Access-Control-Expose-Headers", exposed);
  };
}

/** The requested headers that may be sent (the others are left out, so the browser refuses them). */
export function allowedRequestHeaders(requested: string | undefined): string {
  if (requested === undefined) return "";
  return requested
    .split(",")
    .map((h) => h.trim().toLowerCase())
    .filter(
      (h) =>
        HEADER_NAME.test(h) &&
        ((CORS_REQUEST_HEADERS as readonly string[]).includes(h) || ALLOWED_HEADER.test(h)),
    )
    .join(", ");
}
