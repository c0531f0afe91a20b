// GET /dashboard: the operator's page (gateway/dashboard/). The shell and its assets need no token;
// the data does, and the page sends the admin's token to the JSON API as a bearer header. Every
// answer carries a strict CSP (no inline script or style, no eval, nothing from another origin:
// labs often have no internet) and no-referrer, so nothing the page loads learns its URL.
import { Hono } from "hono";
import { DASHBOARD_ASSETS, DASHBOARD_HTML, DASHBOARD_PATH } from "../dashboard/assets.ts";
import type { AppEnv } from "../types.ts";

export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS = {
  "Content-Security-Policy": DASHBOARD_CSP,
  "Referrer-Policy": "no-referrer",
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Cross-Origin-Opener-Policy": "same-origin",
};

/** An asset named by its current hash never changes; any other request for it revalidates. */
const IMMUTABLE = "public, max-age=31536000, immutable";
const REVALIDATE = "no-cache";

export const dashboardRoutes = new Hono<AppEnv>()
  .get(DASHBOARD_PATH, (c) =>
    c.body(DASHBOARD_HTML, 200, {
      ...SECURITY_HEADERS,
      "Content-Type": "text/html; charset=utf-8",
      "Cache-Control": REVALIDATE,
    }),
  )
  .get(`${DASHBOARD_PATH}/`, (c) => c.redirect(DASHBOARD_PATH, 301))
  .get(`${DASHBOARD_PATH}/:file`, async (c, next) => {
    const asset = DASHBOARD_ASSETS.get(c.req.path);
    if (asset === undefined) return next();
    return c.body(asset.body, 200, {
      ...SECURITY_HEADERS,
      "Content-Type": asset.contentType,
      "Cache-Control": c.req.query("v") === asset.version ? IMMUTABLE : REVALIDATE,
    });
  });
