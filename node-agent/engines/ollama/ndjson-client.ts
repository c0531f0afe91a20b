// The generation requests to Ollama (POST /api/chat, /api/generate with `stream: true`) on node:http
// with a keep-alive agent, instead of the `ollama` client over fetch. Measured against the bench's
// token source (8-token generations, one at a time): 0.92 ms of agent CPU per generation through the
// client, 0.22 ms this way — the client costs more CPU per request than a whole peer gateway does.
// The `ollama` client still does the rare calls (load, unload, the server watch).
//
// It keeps the client's contract, so errors.ts maps failures as before: an HTTP error is thrown
// with Ollama's `{"error": "..."}` text and `status_code`; a `{"error"}` line mid-stream is thrown
// as its text; a stream that ends without a `done` line is STREAM_CUT; a request that never reached
// the server is node's own error (its `code`: ECONNREFUSED, ...). `signal` aborts the request, which
// closes the connection: Ollama stops generating when its client goes away.
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { STREAM_CUT } from "./errors.ts";

/** Ollama's answer as an error, shaped like the `ollama` client's ResponseError. */
export class OllamaResponseError extends Error {
  override readonly name = "ResponseError";
  constructor(
    message: string,
    readonly status_code: number,
  ) {
    super(message);
  }
}

/** An error body's text, as the `ollama` client reads it: `{"error": "..."}`, else the body, else the status. */
function errorText(body: string, res: IncomingMessage): string {
  try {
    const parsed = JSON.parse(body) as { error?: unknown };
    if (typeof parsed.error === "string") return parsed.error;
  } catch {
    // not JSON: the text itself
  }
  return body.trim() !== "" ? body.trim() : (res.statusMessage ?? `HTTP ${res.statusCode}`);
}

/** What an error body may be read up to: Ollama's are a line. */
const ERROR_BODY_MAX = 64 * 1024;

/** One connection pool per engine; idle sockets close after a while, as fetch's do. */
export function ollamaAgents(): { http: http.Agent; https: https.Agent } {
  const options = { keepAlive: true, keepAliveMsecs: 1_000, timeout: 60_000 };
  return { http: new http.Agent(options), https: new https.Agent(options) };
}

export interface NdjsonTarget {
  /** Ollama's base URL (no trailing slash), e.g. http://localhost:11434 */
  baseUrl: string;
  agents: { http: http.Agent; https: https.Agent };
}

/** How long the rest of an answer after its `done` line may take to arrive before the connection is cut. */
const DRAIN_AFTER_DONE_MS = 5_000;

/**
 * POSTs `body` to `path` and yields each NDJSON object of the answer, up to the line with
 * `done: true`. What follows that line (the end of the chunked body) is drained in the background
 * and the signal let go of first, so the connection goes back to the pool instead of being cut by
 * the abort that ends every generation (OllamaEngine.run). Waiting for the end instead would add
 * its delivery to every generation (40 ms behind a server that does not set TCP_NODELAY).
 */
export async function* postNdjson<T extends { done?: boolean }>(
  target: NdjsonTarget,
  path: string,
  body: unknown,
  signal: AbortSignal,
): AsyncGenerator<T> {
  const url = new URL(`${target.baseUrl}${path}`);
  const secure = url.protocol === "https:";
  const payload = JSON.stringify(body);
  let settled = false;
  let onAbort = () => {};
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = (secure ? https : http).request(
      url,
      {
        method: "POST",
        agent: secure ? target.agents.https : target.agents.http,
        headers: {
          "Content-Type": "application/json",
          Accept: "application/x-ndjson",
          "Content-Length": Buffer.byteLength(payload),
        },
      },
      resolve,
    );
    req.once("error", reject);
    // Not the request's `signal` option: that one could not be let go of once the answer is done.
    onAbort = () => {
      if (!settled) req.destroy(abortError(signal));
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    req.end(payload);
  });
  try {
    res.setEncoding("utf8");
    if (res.statusCode !== 200) {
      let text = "";
      for await (const chunk of res) {
        if (text.length < ERROR_BODY_MAX) text += chunk;
      }
      throw new OllamaResponseError(errorText(text, res), res.statusCode ?? 0);
    }
    const done = (part: T): T => {
      settled = true;
      signal.removeEventListener("abort", onAbort);
      if (!res.complete) {
        const cut = setTimeout(() => res.destroy(), DRAIN_AFTER_DONE_MS);
        cut.unref();
        res.once("end", () => clearTimeout(cut)).once("close", () => clearTimeout(cut));
        res.resume();
      }
      return part;
    };
    // destroyOnReturn false: leaving the loop at `done` must not destroy the socket.
    for await (const line of lines(res.iterator({ destroyOnReturn: false }))) {
      const part = JSON.parse(line) as T & { error?: unknown };
      if (typeof part.error === "string") throw new Error(part.error);
      if (part.done === true) {
        yield done(part);
        return;
      }
      yield part;
    }
    throw new Error(STREAM_CUT);
  } finally {
    signal.removeEventListener("abort", onAbort);
    // Stopped early (an error, a consumer that left): end the request, so Ollama stops generating.
    if (!settled) res.destroy();
  }
}

/** The non-blank lines of a text stream, the last one even without its newline. */
async function* lines(chunks: AsyncIterable<unknown>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of chunks) {
    buffered += chunk as string;
    for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() !== "") yield line;
    }
  }
  if (buffered.trim() !== "") yield buffered;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DOMException("This operation was aborted", "AbortError");
}
