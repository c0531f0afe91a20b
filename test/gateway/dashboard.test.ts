// GET /dashboard and its assets as the Worker serves them: no token needed for the shell, a strict
// CSP with no inline script or style, no-referrer, cache headers tied to content hashes, and the
// whole page inside its size budget. The page's behaviour in a browser: test/e2e/dashboard.test.ts.
import { describe, expect, it } from "vitest";
import { DASHBOARD_ASSETS } from "../../gateway/dashboard/assets.ts";
import { gatewayFetch } from "./helpers.ts";

/** Shell, script, style and icon together: "a few tens of KB". */
const PAGE_BUDGET_BYTES = 40 * 1024;

const bytes = (text: string) => new TextEncoder().encode(text).byteLength;

function expectSecurityHeaders(res: Response) {
  const csp = res.headers.get("Content-Security-Policy") ?? "";
  const directives = new Map(
    csp.split(";").map((d) => {
      const [name = "", ...values] = d.trim().split(/\s+/);
      return [name, values.join(" ")] as const;
    }),
  );
  expect(directives.get("default-src")).toBe("'none'");
  expect(directives.get("script-src")).toBe("'self'");
  expect(directives.get("style-src")).toBe("'self'");
  expect(directives.get("connect-src")).toBe("'self'");
  expect(directives.get("form-action")).toBe("'none'");
  expect(directives.get("frame-ancestors")).toBe("'none'");
  expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:|\*/);
  expect(res.headers.get("Referrer-Policy")).toBe("no-referrer");
  expect(res.headers.get("X-Content-Type-Options")).toBe("nosniff");
}

/** The asset URLs the shell links (script src, stylesheet and icon href). */
function linkedAssets(html: string): string[] {
  return [...html.matchAll(/<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"/g)].map((m) => m[1] ?? "");
}

describe("GET /dashboard", () => {
  it("serves the HTML shell without a token, with the CSP, no-referrer and revalidation", async () => {
    const res = await gatewayFetch("/dashboard");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("Cache-Control")).toBe("no-cache");
    expectSecurityHeaders(res);
    const html = await res.text();
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('<html lang="en">');
    // Everything the CSP would refuse, or that would reach another origin: none of it.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<script\b[^>]*>[^<]+<\/script>/);
    expect(html).not.toMatch(/\sstyle=|<style\b|\son[a-z]+=/i);
    expect(html).not.toMatch(/(?:src|href)="(?:https?:)?\/\//);
    // The sign-in field is labelled and has no name, so no submission can carry the token.
    expect(html).toMatch(/<label for="token">/);
    expect(html).toMatch(/<input id="token" type="password"/);
    expect(html).not.toMatch(/<input[^>]*\bname=/);
    for (const landmark of ["<header>", "<main>", 'role="status"', 'aria-live="polite"']) {
      expect(html).toContain(landmark);
    }
  });

  it("links script, style and icon by content hash, each served with its type and cached for good", async () => {
    const html = await (await gatewayFetch("/dashboard")).text();
    const links = linkedAssets(html);
    expect(links.map((l) => l.split("?")[0]).sort()).toEqual([
      "/dashboard/app.css",
      "/dashboard/app.js",
      "/dashboard/icon.svg",
    ]);
    const types: Record<string, string> = {
      "/dashboard/app.js": "text/javascript; charset=utf-8",
      "/dashboard/app.css": "text/css; charset=utf-8",
      "/dashboard/icon.svg": "image/svg+xml",
    };
    for (const link of links) {
      const path = link.split("?")[0] ?? "";
      const res = await gatewayFetch(link);
      expect(res.status, link).toBe(200);
      expect(res.headers.get("Content-Type")).toBe(types[path]);
      expect(res.headers.get("Cache-Control")).toBe("public, max-age=31536000, immutable");
      expectSecurityHeaders(res);
      expect(await res.text()).toBe(DASHBOARD_ASSETS.get(path)?.body);
    }
  });

  it("revalidates an asset asked for without its current hash", async () => {
    for (const url of ["/dashboard/app.js", "/dashboard/app.js?v=stale"]) {
      const res = await gatewayFetch(url);
      expect(res.status).toBe(200);
      expect(res.headers.get("Cache-Control")).toBe("no-cache");
      await res.body?.cancel();
    }
  });

  it("the script needs no eval and writes no markup from data", async () => {
    const script = DASHBOARD_ASSETS.get("/dashboard/app.js")?.body ?? "";
    expect(script.length).toBeGreaterThan(1000);
    expect(script).not.toMatch(
      /\beval\(|new Function|innerHTML|outerHTML|insertAdjacentHTML|document\.write/,
    );
    // It reads the token from the fragment and takes it out of the address bar and history.
    expect(script).toContain("history.replaceState");
    expect(script).toContain("sessionStorage");
  });

  it("fits the page budget", async () => {
    const html = await (await gatewayFetch("/dashboard")).text();
    const sizes = { html: bytes(html) } as Record<string, number>;
    for (const [path, asset] of DASHBOARD_ASSETS) sizes[path] = bytes(asset.body);
    const total = Object.values(sizes).reduce((a, b) => a + b, 0);
    expect(total, JSON.stringify(sizes)).toBeLessThan(PAGE_BUDGET_BYTES);
  });

  it("unknown files under /dashboard are 404; /dashboard/ redirects to the page", async () => {
    const missing = await gatewayFetch("/dashboard/nope.js");
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: "NOT_FOUND" } });
    const slash = await gatewayFetch("/dashboard/", { redirect: "manual" });
    expect(slash.status).toBe(301);
    expect(new URL(slash.headers.get("Location") ?? "", "https://x").pathname).toBe("/dashboard");
  });

  it("loading the page opens nothing: the data it reads still needs an admin token", async () => {
    await (await gatewayFetch("/dashboard")).body?.cancel();
    const agents = await gatewayFetch("/agents");
    expect(agents.status).toBe(401);
    await agents.body?.cancel();
  });
});
