// GET /openapi.json (the OpenAPI 3.1 document, generated from the zod schemas) and GET /docs (the
// reference page rendered from it). Both public: they describe the API, they expose nothing of it.
import { Hono } from "hono";
import { readConfig } from "../config.ts";
import { renderDocsPage } from "../openapi/docs-page.ts";
import { buildDocument } from "../openapi/document.ts";
import type { AppEnv } from "../types.ts";

interface Reference {
  version: string;
  json: string;
  html: string;
}

/**
 * Built on the first request an isolate gets and kept: a pure function of the code and of
 * ORCHARD_VERSION (a new deploy is a new isolate), so it cannot disagree between isolates — the
 * same exception STYLE.md makes for the imported HMAC keys. Building takes some 100 ms of CPU.
 */
let reference: Reference | undefined;

function referenceFor(version: string): Reference {
  if (reference?.version !== version) {
    const document = buildDocument({ version });
    reference = { version, json: JSON.stringify(document), html: renderDocsPage(document) };
  }
  return reference;
}

const CACHE = "public, max-age=300";

export const openapiRoutes = new Hono<AppEnv>()
  .get("/openapi.json", (c) => {
    const { json } = referenceFor(readConfig(c.env).version);
    return c.body(json, 200, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": CACHE });
  })
  .get("/docs", (c) => {
    const { html } = referenceFor(readConfig(c.env).version);
    return c.body(html, 200, {
      "Content-Type": "text/html; charset=utf-8",
      "Cache-Control": CACHE,
      // The page is static HTML with one inline style sheet: nothing else may load or run.
      "Content-Security-Policy":
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    });
  });
