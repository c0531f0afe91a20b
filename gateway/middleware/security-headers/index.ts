// Security headers on every answer, through Hono's secureHeaders() with overwrite off, so a route
// that sets its own (the dashboard's and /docs' Content-Security-Policy) keeps it. The defaults
// here are for an API: a CSP that lets a response load and frame nothing, DENY framing, no
// referrer, no MIME sniffing, HSTS for a year. Hono's header list is kept otherwise (COOP, CORP
// same-origin, which cross-origin fetch() in CORS mode is not subject to, X-DNS-Prefetch-Control...).
import type { MiddlewareHandler } from "hono";
import { secureHeaders } from "hono/secure-headers";
import type { AppEnv } from "../../types.ts";

export const API_CSP = "default-src 'none'; frame-ancestors 'none'";
export const HSTS = "max-age=31536000; includeSubDomains";

export function securityHeaders(): MiddlewareHandler<AppEnv> {
  const headers = secureHeaders({
    contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
    xFrameOptions: "DENY",
    referrerPolicy: "no-referrer",
    strictTransportSecurity: HSTS,
    overwrite: false,
  });
  return async function securityHeaders(c, next) {
    return headers(c, async () => {
      await next();
      // A Durable Object's 101 has immutable headers, which secureHeaders() would throw on: it is
      // copied first, as the request-id middleware does.
      if (c.res.status === 101) c.res = upgradeWithMutableHeaders(c.res);
    });
  };
}

function upgradeWithMutableHeaders(res: Response): Response {
  return new Response(null, {
    status: 101,
    statusText: res.statusText,
    headers: new Headers(res.headers),
    webSocket: res.webSocket,
  });
}
