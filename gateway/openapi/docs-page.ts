// GET /docs: the OpenAPI document rendered as one self-contained HTML page (no script, no fonts, no
// CDN: labs often have no internet). Operations by tag, each with who may call it, its parameters,
// body, example and answers; then every named schema, written compactly as a type.

type Json = Record<string, unknown>;

const METHODS = ["get", "post", "put", "delete", "patch"] as const;

/** Text content only: every attribute value on the page is a slug or a fixed string. */
const escapeHtml = (text: string) =>
  text.replace(/[&<>]/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : "&gt;"));

/** `code` spans for backquoted words in the document's prose. */
const prose = (text: string) => escapeHtml(text).replace(/`([^`]+)`/g, "<code>$1</code>");

const slug = (text: string) =>
  text
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "");

const refName = (ref: string) => ref.slice(ref.lastIndexOf("/") + 1);

function asJson(value: unknown): Json {
  return typeof value === "object" && value !== null ? (value as Json) : {};
}

/** Constraints of a scalar, as `(1..128 chars)`, `/pattern/`, `= default`. */
function constraints(s: Json): string {
  const parts: string[] = [];
  const range = (lo: unknown, hi: unknown, unit: string) => {
    if (lo === undefined && hi === undefined) return;
    parts.push(`${lo ?? ""}..${hi ?? ""}${unit}`);
  };
  range(s.minLength, s.maxLength, " chars");
  range(s.minItems, s.maxItems, " items");
  range(s.minProperties, s.maxProperties, " keys");
  // zod's .int() bounds every integer by the safe range: no news to a reader.
  const bound = (v: unknown) =>
    v === Number.MAX_SAFE_INTEGER || v === Number.MIN_SAFE_INTEGER ? undefined : v;
  const lo = bound(s.minimum) ?? (s.exclusiveMinimum === undefined ? undefined : `>${s.exclusiveMinimum}`);
  const hi = bound(s.maximum) ?? (s.exclusiveMaximum === undefined ? undefined : `<${s.exclusiveMaximum}`);
  range(lo, hi, "");
  if (typeof s.format === "string") parts.push(s.format);
  let text = parts.length > 0 ? ` (${parts.join(", ")})` : "";
  if (typeof s.pattern === "string") text += ` /${s.pattern}/`;
  if (s.default !== undefined) text += ` = ${JSON.stringify(s.default)}`;
  return escapeHtml(text);
}

/** A JSON Schema as a compact type, with links to named schemas. `depth` indents nested objects. */
export function typeText(schema: unknown, depth = 0): string {
  const s = asJson(schema);
  if (typeof s.$ref === "string") {
    const name = refName(s.$ref);
    return `<a href="#schema-${slug(name)}">${escapeHtml(name)}</a>`;
  }
  const alternatives = (s.oneOf ?? s.anyOf) as unknown[] | undefined;
  if (Array.isArray(alternatives)) {
    const join = alternatives.map((a) => typeText(a, depth));
    return join.join(join.some((t) => t.includes("\n")) ? `\n${"  ".repeat(depth)}| ` : " | ");
  }
  if (Array.isArray(s.allOf)) return s.allOf.map((a) => typeText(a, depth)).join(" & ");
  if (s.const !== undefined) return escapeHtml(JSON.stringify(s.const));
  if (Array.isArray(s.enum)) return escapeHtml(s.enum.map((v) => JSON.stringify(v)).join(" | "));
  const types = Array.isArray(s.type) ? (s.type as string[]) : typeof s.type === "string" ? [s.type] : [];
  if (types.length > 1) {
    return types.map((t) => typeText({ ...s, type: t }, depth)).join(" | ");
  }
  const type = types[0];
  if (type === "array") {
    const item = typeText(s.items, depth);
    const visible = item.replace(/<[^>]+>/g, "");
    return `${/[ |\n]/.test(visible) ? `(${item})` : item}[]${constraints(s)}`;
  }
  if (type === "object" || s.properties !== undefined) return objectText(s, depth) + constraints(s);
  if (type === undefined) return "any";
  return `${escapeHtml(type)}${constraints(s)}`;
}

function objectText(s: Json, depth: number): string {
  const properties = asJson(s.properties);
  const required = new Set(Array.isArray(s.required) ? (s.required as string[]) : []);
  const pad = "  ".repeat(depth + 1);
  const lines = Object.entries(properties).map(([key, value]) => {
    const description = asJson(value).description;
    const comment = typeof description === "string" ? ` <span class="c">// ${prose(description)}</span>` : "";
    const optional = required.has(key) ? "" : "?";
    return `${pad}${escapeHtml(key)}${optional}: ${typeText(value, depth + 1)}${comment}`;
  });
  const extra = s.additionalProperties;
  if (extra !== undefined && extra !== false) {
    const keys = s.propertyNames === undefined ? "string" : typeText(s.propertyNames, depth + 1);
    lines.push(`${pad}[key: ${keys}]: ${extra === true ? "any" : typeText(extra, depth + 1)}`);
  }
  if (lines.length === 0) return "{}";
  return `{\n${lines.join("\n")}\n${"  ".repeat(depth)}}`;
}

/** Who may call an operation, from its security requirements. */
function accessText(security: unknown): string {
  if (!Array.isArray(security) || security.length === 0) return "Auth: none (public).";
  const roles: string[] = [];
  const tokens: string[] = [];
  for (const requirement of security) {
    for (const [scheme, scopes] of Object.entries(asJson(requirement))) {
      if (scheme === "bearerAuth") roles.push(...(scopes as string[]));
      else tokens.push(scheme);
    }
  }
  const ways = [
    ...(roles.length > 0
      ? [`bearer JWT with role ${roles.map((r) => `<code>${escapeHtml(r)}</code>`).join(" or ")}`]
      : []),
    ...tokens.map((t) => `the <code>${escapeHtml(t)}</code> bearer token`),
  ];
  return `Auth: ${ways.join(", or ")}.`;
}

/** The operation's own parameters; shared ones ($ref, X-Request-Id) are described once, at the top. */
function parametersTable(parameters: unknown[]): string {
  const rows = parameters
    .map(asJson)
    .filter((p) => p.$ref === undefined)
    .map((p) => {
      const schema = { ...asJson(p.schema), description: undefined };
      return (
        `<tr><th scope="row"><code>${escapeHtml(String(p.name))}</code></th><td>${escapeHtml(String(p.in))}` +
        `${p.required ? ", required" : ""}</td><td><code>${typeText(schema)}</code></td>` +
        `<td>${typeof p.description === "string" ? prose(p.description) : ""}</td></tr>`
      );
    });
  return (
    '<table><thead><tr><th scope="col">Name</th><th scope="col">In</th><th scope="col">Type</th>' +
    `<th scope="col">Description</th></tr></thead><tbody>${rows.join("")}</tbody></table>`
  );
}

function contentText(content: unknown): string {
  return Object.entries(asJson(content))
    .map(([type, media]) => {
      const schema = asJson(media).schema;
      const rendered = typeText(schema);
      const body = rendered.includes("\n")
        ? `<pre><code>${rendered}</code></pre>`
        : ` <code>${rendered}</code>`;
      return `<p><code>${escapeHtml(type)}</code>:${body}</p>`;
    })
    .join("");
}

function operationHtml(method: string, path: string, op: Json): string {
  const id = `op-${slug(String(op.operationId))}`;
  const parts = [
    `<article id="${id}" aria-labelledby="${id}-h">`,
    `<h3 id="${id}-h"><span class="m ${method}">${method.toUpperCase()}</span> <code>${escapeHtml(path)}</code></h3>`,
    `<p class="summary">${prose(String(op.summary ?? ""))}</p>`,
  ];
  if (typeof op.description === "string") parts.push(`<p>${prose(op.description)}</p>`);
  parts.push(`<p class="access">${accessText(op.security)}</p>`);
  const parameters = (Array.isArray(op.parameters) ? op.parameters : []).filter(
    (p) => asJson(p).$ref === undefined,
  );
  if (parameters.length > 0) parts.push("<h4>Parameters</h4>", parametersTable(parameters));
  const body = asJson(op.requestBody);
  if (body.content !== undefined) {
    parts.push(`<h4>Request body${body.required ? "" : " (optional)"}</h4>`);
    if (typeof body.description === "string") parts.push(`<p>${prose(body.description)}</p>`);
    parts.push(contentText(body.content));
    const example = asJson(asJson(body.content)["application/json"]).example;
    if (example !== undefined) {
      parts.push(`<p>Example:</p><pre><code>${escapeHtml(JSON.stringify(example, null, 2))}</code></pre>`);
    }
  }
  parts.push("<h4>Responses</h4><dl>");
  const errors: string[] = [];
  let errorBody = "";
  for (const [status, value] of Object.entries(asJson(op.responses))) {
    const response = asJson(value);
    const codes = response["x-error-codes"];
    if (Array.isArray(codes)) {
      errorBody = typeText(asJson(asJson(asJson(response.content)["application/json"])).schema);
      errors.push(
        `${escapeHtml(status)} ${codes.map((c) => `<code>${escapeHtml(String(c))}</code>`).join(" ")}`,
      );
      continue;
    }
    const headers = Object.keys(asJson(response.headers)).filter((h) => h !== "X-Request-Id");
    parts.push(
      `<dt>${escapeHtml(status)}</dt><dd>${prose(String(response.description))}`,
      contentText(response.content),
    );
    if (headers.length > 0) {
      parts.push(`<p>Headers: ${headers.map((h) => `<code>${escapeHtml(h)}</code>`).join(", ")}</p>`);
    }
    parts.push("</dd>");
  }
  parts.push("</dl>");
  if (errors.length > 0) parts.push(`<p class="errors">Errors (${errorBody}): ${errors.join("; ")}.</p>`);
  parts.push("</article>");
  return parts.join("\n");
}

const STYLE = `
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--muted:#57606a;--line:#d0d7de;--code:#f3f4f6;--link:#0b57d0}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9da7b1;--line:#30363d;--code:#161b22;--link:#79b8ff}}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--link)}.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:var(--bg);padding:.5rem}
header,main,footer{max-width:64rem;margin:0 auto;padding:0 1.25rem}
.layout{display:grid;grid-template-columns:21rem minmax(0,1fr);max-width:86rem;margin:0 auto}
nav{position:sticky;top:0;align-self:start;max-height:100vh;overflow:auto;padding:1rem;border-right:1px solid var(--line);font-size:.875rem}
nav ul{list-style:none;padding-left:.75rem;margin:.25rem 0}nav a{text-decoration:none}nav code{white-space:nowrap}
@media (max-width:60rem){.layout{display:block}nav{position:static;max-height:none;border:0}}
code,pre{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--code);padding:.75rem;overflow-x:auto;border-radius:6px}p code,td code,dd code{background:var(--code);padding:0 .2em;border-radius:3px}
article{border-top:1px solid var(--line);padding:.5rem 0 1rem}h2{margin-top:2.5rem}h3{margin-bottom:.25rem}h3 code{font-size:.95em}
.m{display:inline-block;min-width:4.2em;text-align:center;border-radius:4px;padding:0 .3em;font-size:.8em;color:#fff}
.get{background:#1a7f37}.post{background:#0550ae}.put{background:#9a6700}.delete{background:#cf222e}
.summary{font-weight:600;margin:.25rem 0}.access,.c{color:var(--muted)}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;vertical-align:top;border-bottom:1px solid var(--line);padding:.3rem .5rem}
dt{font-weight:700;float:left;clear:left;width:3.5rem}dd{margin:0 0 .5rem 3.5rem}dd p{margin:.2rem 0}`;

/** The parameters every operation takes (components.parameters), said once. */
function sharedParameters(doc: Json): string {
  const shared = Object.values(asJson(asJson(doc.components).parameters)).map(asJson);
  if (shared.length === 0) return "";
  return `<p>Every operation also takes ${shared
    .map(
      (p) =>
        `<code>${escapeHtml(String(p.name))}</code> (${escapeHtml(String(p.in))}): ${prose(String(p.description ?? ""))}`,
    )
    .join("; ")}</p>`;
}

/** The whole page. */
export function renderDocsPage(document: unknown): string {
  const doc = asJson(document);
  const info = asJson(doc.info);
  const tags = (Array.isArray(doc.tags) ? doc.tags : []).map(asJson);
  const byTag = new Map<string, string[]>(tags.map((t) => [String(t.name), []]));
  const contents = new Map<string, string[]>(tags.map((t) => [String(t.name), []]));
  for (const [path, item] of Object.entries(asJson(doc.paths))) {
    for (const method of METHODS) {
      const op = asJson(asJson(item)[method]);
      if (op.operationId === undefined) continue;
      const tag = String((op.tags as string[] | undefined)?.[0] ?? "Other");
      if (!byTag.has(tag)) {
        byTag.set(tag, []);
        contents.set(tag, []);
      }
      byTag.get(tag)?.push(operationHtml(method, path, op));
      contents
        .get(tag)
        ?.push(
          `<li><a href="#op-${slug(String(op.operationId))}"><code>${method.toUpperCase()} ${escapeHtml(path)}</code></a></li>`,
        );
    }
  }
  const schemas = Object.entries(asJson(asJson(doc.components).schemas));
  const nav = [...contents]
    .map(
      ([tag, items]) =>
        `<li><a href="#tag-${slug(tag)}">${escapeHtml(tag)}</a><ul>${items.join("")}</ul></li>`,
    )
    .join("");
  const sections = [...byTag].map(([tag, ops]) => {
    const description = tags.find((t) => t.name === tag)?.description;
    return (
      `<section aria-labelledby="tag-${slug(tag)}"><h2 id="tag-${slug(tag)}">${escapeHtml(tag)}</h2>` +
      `${typeof description === "string" ? `<p>${prose(description)}</p>` : ""}${ops.join("\n")}</section>`
    );
  });
  const schemaSections = schemas.map(([name, schema]) => {
    const description = asJson(schema).description;
    return (
      `<section id="schema-${slug(name)}" aria-labelledby="schema-${slug(name)}-h"><h3 id="schema-${slug(name)}-h">` +
      `${escapeHtml(name)}</h3>${typeof description === "string" ? `<p>${prose(description)}</p>` : ""}` +
      `<pre><code>${typeText(schema)}</code></pre></section>`
    );
  });
  const title = `${String(info.title ?? "API")} API reference`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body><a class="skip" href="#main">Skip to the reference</a>
<header><h1>${escapeHtml(title)} <small>${escapeHtml(String(info.version ?? ""))}</small></h1>
<p>${prose(String(info.description ?? ""))}</p>
${sharedParameters(doc)}
<p>The same as OpenAPI ${escapeHtml(String(doc.openapi))}: <a href="/openapi.json">/openapi.json</a>.</p></header>
<div class="layout"><nav aria-label="Operations"><h2>Contents</h2><ul>${nav}<li><a href="#schemas">Schemas</a></li></ul></nav>
<main id="main">${sections.join("\n")}
<section aria-labelledby="schemas"><h2 id="schemas">Schemas</h2>${schemaSections.join("\n")}</section></main></div>
<footer><p>Generated from the gateway's zod schemas.</p></footer></body></html>
`;
}
