// What every fuzzed HTTP answer must satisfy (docs/fuzzing.md): no 5xx beyond the documented ones,
// an answer within its time bound, errors in the documented shape with a stable code that the
// status table maps to that status, and no internal detail in any error. Pure: it judges an
// exchange that fuzz-harness.ts recorded.

import { isOpenAIPath, STATUS_BY_CODE } from "../../gateway/errors.ts";
import { errorCodesOf } from "../../gateway/openapi/document.ts";
import type { OperationSpec } from "../../gateway/openapi/operation.ts";
import { ErrorBody, type ErrorCode, OpenAIErrorBody } from "../../schema/api.ts";

/**
 * The 5xx answers that are conditions of the fleet, not bugs, each with the routes it is
 * documented for and why. Any other status >= 500 fails a fuzz property.
 */
export const DOCUMENTED_5XX: readonly { code: ErrorCode; status: number; routes: RegExp; why: string }[] = [
  {
    code: "NO_AGENT_AVAILABLE",
    status: 503,
    routes: /^POST (\/generate|\/v1\/chat\/completions)$/,
    why: "a model the pool knows, with no agent that can serve it now",
  },
  {
    code: "QUEUE_TIMEOUT",
    status: 504,
    routes: /^POST (\/generate|\/v1\/chat\/completions)$/,
    why: "the request's deadline (X-Orchard-Timeout-Ms) passed while it was queued",
  },
  {
    code: "GATEWAY_TIMEOUT",
    status: 504,
    routes: /^POST (\/generate|\/v1\/chat\/completions)$/,
    why: "the request's deadline passed while an agent generated",
  },
  {
    code: "ACTIVATION_NOT_READY",
    status: 503,
    routes: /^POST \/models\/\{model_id\}\/activate$/,
    why: "too few agents loaded the version within the activation's timeout",
  },
];

/** Only where an agent served the request: the agent-frame fuzz's rogue may fail it. */
export const AGENT_FAILURE_5XX: readonly ErrorCode[] = ["UPSTREAM_ERROR"];

/** Codes the router itself answers with for any path (no route, or not this method). */
const ROUTER_CODES: readonly ErrorCode[] = ["NOT_FOUND", "METHOD_NOT_ALLOWED"];

const REQUEST_ID = /^[A-Za-z0-9._:=-]{1,64}$/;

/**
 * What an error body must never show a caller. Text the caller sent is removed first (a 404
 * names the path it was asked for), so these match only what the gateway added.
 */
const LEAKS: readonly [string, RegExp][] = [
  ["a stack frame", /\bat [\w$.<>]+ \(|\bat (file|https?|node):|:\d+:\d+\)?$/m],
  ["a source path", /\/work\/|node_modules|file:\/\/|\b[\w-]+\.(ts|mjs|cjs|js):\d+|\bgateway\/|\bschema\//],
  [
    "an exception name",
    /\b(TypeError|RangeError|SyntaxError|ReferenceError|ZodError|AbortError|DOMException)\b/,
  ],
  [
    "a runtime or database message",
    /D1_ERROR|SQLITE_|SqliteError|workerd|Durable Object|internal error;|Network connection lost/i,
  ],
  [
    "a JSON parser message",
    /Unexpected (token|end of JSON|non-whitespace)|JSON at position|", .* is not valid JSON/,
  ],
  ["a Durable Object id", /\b[0-9a-f]{64}\b/],
];

export interface Exchange {
  /** Method as sent; the route's template and the final URL path the gateway saw. */
  method: string;
  template: string;
  pathname: string;
  op: OperationSpec | undefined;
  status: number;
  headers: Headers;
  /** The body as text; null when there is none to judge (HEAD, 101, or it did not end in time). */
  text: string | null;
  elapsedMs: number;
  boundMs: number;
  /** Strings the request carried, removed from error text before looking for leaks. */
  echoes: readonly string[];
  /** Ids that are the gateway's business (agent ids, session ids): never in an error. */
  secrets: readonly string[];
  /** 5xx codes allowed on top of DOCUMENTED_5XX (the agent fuzz allows UPSTREAM_ERROR). */
  extra5xx?: readonly ErrorCode[];
  /**
   * Codes this operation's documentation is known to miss, each a reported bug in a file another
   * engineer is changing: excused from the documented-code check only, nothing else.
   */
  undocumented?: readonly ErrorCode[];
}

/** Whether `pathname` is an instance of the OpenAPI `template` (`{name}` matches one segment). */
export function matchesTemplate(template: string, pathname: string): boolean {
  const pattern = template
    .split("/")
    .map((part) => (/^\{[^}]+\}$/.test(part) ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${pattern}$`).test(pathname);
}

/** Everything wrong with one exchange; empty when it is fine. */
export function judge(x: Exchange): string[] {
  const problems: string[] = [];
  if (x.elapsedMs > x.boundMs) problems.push(`no answer within ${x.boundMs} ms (took ${x.elapsedMs} ms)`);
  const requestId = x.headers.get("X-Request-Id");
  if (x.status !== 101 && (requestId === null || !REQUEST_ID.test(requestId))) {
    problems.push(`X-Request-Id ${JSON.stringify(requestId)} is missing or malformed`);
  }
  const code = x.headers.get("X-Error-Code");
  const documentedAnswer =
    x.op !== undefined && x.op.method.toUpperCase() === x.method && x.op.responses[`${x.status}`];
  if (x.status >= 500) {
    const allowed =
      DOCUMENTED_5XX.some(
        (d) => d.code === code && d.status === x.status && d.routes.test(`${x.method} ${x.template}`),
      ) ||
      (x.extra5xx ?? []).some((c) => c === code && STATUS_BY_CODE[c] === x.status) ||
      Boolean(documentedAnswer);
    if (!allowed) problems.push(`status ${x.status} (${code ?? "no X-Error-Code"}) is not a documented 5xx`);
  }
  if (x.status < 400 || x.text === null || documentedAnswer) return problems;
  problems.push(...judgeErrorBody(x, code, requestId));
  return problems;
}

function judgeErrorBody(x: Exchange, code: string | null, requestId: string | null): string[] {
  const problems: string[] = [];
  const type = x.headers.get("Content-Type") ?? "";
  if (!type.startsWith("application/json")) problems.push(`error Content-Type is ${JSON.stringify(type)}`);
  let body: unknown;
  try {
    body = JSON.parse(x.text as string);
  } catch {
    return [...problems, `error body is not JSON: ${JSON.stringify((x.text as string).slice(0, 200))}`];
  }
  const openAI = isOpenAIPath(x.pathname);
  const parsed = (openAI ? OpenAIErrorBody : ErrorBody).safeParse(body);
  if (!parsed.success) {
    return [
      ...problems,
      `error body is not ${openAI ? "OpenAIErrorBody" : "ErrorBody"}: ${x.text?.slice(0, 300)}`,
    ];
  }
  const error = parsed.data.error;
  if (code !== error.code) problems.push(`X-Error-Code ${code} differs from the body's ${error.code}`);
  if (STATUS_BY_CODE[error.code] !== x.status) {
    problems.push(`code ${error.code} is documented as ${STATUS_BY_CODE[error.code]}, answered ${x.status}`);
  }
  if ("requestId" in error && error.requestId !== requestId) {
    problems.push(`body requestId ${error.requestId} differs from X-Request-Id ${requestId}`);
  }
  // The operation this request reached (same method, path still an instance of its template):
  // its code must be one the document lists for it, or the router's own.
  if (
    x.op !== undefined &&
    x.op.method.toUpperCase() === x.method &&
    matchesTemplate(x.op.path, x.pathname) &&
    !errorCodesOf(x.op).includes(error.code) &&
    !ROUTER_CODES.includes(error.code) &&
    !(x.undocumented ?? []).includes(error.code)
  ) {
    problems.push(`${x.method} ${x.op.path} answered ${error.code}, which its documentation does not list`);
  }
  const leak = leakIn(x.text as string, x.echoes, x.secrets);
  if (leak !== null) problems.push(`error body shows ${leak}: ${x.text?.slice(0, 300)}`);
  return problems;
}

/** The first kind of internal detail `text` shows, after removing what the caller sent; or null. */
export function leakIn(text: string, echoes: readonly string[], secrets: readonly string[]): string | null {
  for (const secret of secrets)
    if (secret !== "" && text.includes(secret)) return `an internal id (${secret})`;
  let own = text;
  // Longest first, so a path is removed before the segments it contains.
  for (const echo of [...echoes].filter((e) => e.length >= 3).sort((a, b) => b.length - a.length)) {
    own = own.replaceAll(echo, "…");
    const escaped = JSON.stringify(echo).slice(1, -1);
    if (escaped !== echo) own = own.replaceAll(escaped, "…");
  }
  for (const [what, pattern] of LEAKS) if (pattern.test(own)) return what;
  return null;
}
