// The load generator's HTTP side: undici's Pool driven through its low-level dispatch() API (one
// connection per concurrent request, keep-alive, no pipelining), counting tokens as body bytes
// arrive. undici is the HTTP client Node itself ships; it is already installed (wrangler and
// miniflare depend on it), and its ceiling is measured against a trivial server every run.
import { Pool } from "undici";
import type { RequestContext, RequestFn, RequestOutcome } from "./closed-loop.ts";

const TILDE = 0x7e;

/** Tokens in a body chunk: the synthetic token carries exactly one "~" (bench/synthetic-engine.ts). */
export function countTokens(chunk: Buffer): number {
  let n = 0;
  for (let at = chunk.indexOf(TILDE); at !== -1; at = chunk.indexOf(TILDE, at + 1)) n++;
  return n;
}

export interface HttpRequestSpec {
  method: "GET" | "POST";
  path: string;
  headers: Record<string, string>;
  /** When present, used instead of `headers`, one per request in turn (e.g. one per simulated end user). */
  perRequestHeaders?: readonly Record<string, string>[];
  body?: string;
  /** When present, used instead of `body`, one per request in turn (e.g. alternating models). */
  perRequestBodies?: readonly string[];
}

export class LoadClient {
  readonly pool: Pool;
  #sent = 0;

  constructor(origin: string, connections: number) {
    this.pool = new Pool(origin, {
      connections,
      pipelining: 1,
      // workerd closes a keep-alive connection 5 s after its last response (measured); reusing one
      // near that moment races the close, so the client lets idle connections go first.
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 4_000,
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
    });
  }

  /** One request: resolves when the body has ended; tokens counted by "~" bytes, TTFT at the first. */
  request(spec: HttpRequestSpec, ctx: RequestContext, countBytes = true): Promise<RequestOutcome> {
    return new Promise((resolve, reject) => {
      const t0 = performance.now();
      let status = 0;
      let tokens = 0;
      let ttftMs: number | undefined;
      let errorBody = "";
      // undici's Client validates handlers in the classic shape (onConnect/onHeaders/onData/...).
      const handler = {
        onConnect() {},
        onHeaders(statusCode: number) {
          status = statusCode;
          return true;
        },
        onData(chunk: Buffer) {
          if (status !== 200) {
            if (errorBody.length < 300) errorBody += chunk.toString();
            return true;
          }
          if (!countBytes) return true;
          const n = countTokens(chunk);
          if (n > 0) {
            ttftMs ??= performance.now() - t0;
            tokens += n;
            ctx.onTokens(n);
          }
          return true;
        },
        onComplete() {
          if (status !== 200) reject(new Error(`HTTP ${status}: ${errorBody.slice(0, 300)}`));
          else resolve({ ttftMs, tokens });
        },
        onError(err: Error) {
          reject(err);
        },
      };
      const rotating = spec.perRequestHeaders;
      const bodies = spec.perRequestBodies;
      const n = this.#sent++;
      const headers =
        rotating === undefined || rotating.length === 0
          ? spec.headers
          : (rotating[n % rotating.length] as Record<string, string>);
      const body = bodies === undefined || bodies.length === 0 ? spec.body : bodies[n % bodies.length];
      this.pool.dispatch({ path: spec.path, method: spec.method, headers, body }, handler);
    });
  }

  requestFn(spec: HttpRequestSpec): RequestFn {
    return (ctx) => this.request(spec, ctx);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
