// Ollama's failures as the agent's stable engine codes. Ollama says what went wrong only with its
// status code and the text of its `{"error": "..."}` body (docs.ollama.com/api/errors; mid-stream
// the same object arrives as an NDJSON line), so this is the one place that reads that text.
import { EngineError } from "../engine.ts";

/** What Ollama's scheduler and runners say when a model does not fit (server/sched.go, llm/server.go). */
const OUT_OF_MEMORY =
  /requires more system memory|out of memory|insufficient memory|not enough memory|failed to allocate|cudaMalloc failed/i;

/** Causes of a fetch that never reached a server, or lost it mid-stream (undici's codes among them). */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
]);

/** The ollama client's own text when a stream ends without a `done` line (a server that went away). */
export const STREAM_CUT = "Did not receive done or success response in stream.";

export interface OllamaErrorContext {
  baseUrl: string;
  /** The Ollama tag the request named. */
  tag: string;
}

export function asOllamaError(err: unknown, { baseUrl, tag }: OllamaErrorContext): EngineError {
  if (err instanceof EngineError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const status = (err as { status_code?: unknown }).status_code;
  const options = { cause: err };
  if (OUT_OF_MEMORY.test(message)) {
    // Another agent may have the memory: retryable.
    return new EngineError(
      "OUT_OF_MEMORY",
      `Ollama has no memory for "${tag}": ${clip(message)}`,
      true,
      options,
    );
  }
  if (typeof status === "number") {
    switch (status) {
      case 404:
        return new EngineError(
          "MODEL_NOT_FOUND",
          `the Ollama server at ${baseUrl} has no model "${tag}" (pull it there: ollama pull ${tag})`,
          false,
          options,
        );
      case 400:
        return new EngineError(
          "INVALID_REQUEST",
          `Ollama refused the request: ${clip(message)}`,
          false,
          options,
        );
      case 429:
      case 502:
      case 503:
        // 503: OLLAMA_MAX_QUEUE is full ("server busy"); 429/502: rate limit, an unreachable cloud model.
        return new EngineError(
          "ENGINE_UNAVAILABLE",
          `Ollama is busy (${status}): ${clip(message)}`,
          true,
          options,
        );
      default:
        return new EngineError("ENGINE_ERROR", `Ollama answered ${status}: ${clip(message)}`, true, options);
    }
  }
  if (isConnectionFailure(err) || message === STREAM_CUT) {
    return new EngineError(
      "ENGINE_UNAVAILABLE",
      `no Ollama server answers at ${baseUrl} (${connectionDetail(err)})`,
      true,
      options,
    );
  }
  return new EngineError("ENGINE_ERROR", `Ollama failed: ${clip(message)}`, true, options);
}

/** fetch() failed to connect, or the connection broke while a body was being read. */
export function isConnectionFailure(err: unknown): boolean {
  const code = causeCode(err);
  if (code !== undefined && CONNECTION_CODES.has(code)) return true;
  return err instanceof TypeError && (err.message === "fetch failed" || err.message === "terminated");
}

function causeCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

function connectionDetail(err: unknown): string {
  if ((err instanceof Error ? err.message : "") === STREAM_CUT) return "the stream ended before done";
  return causeCode(err) ?? (err instanceof Error ? err.message : String(err));
}

function clip(text: string): string {
  return text.length > 500 ? `${text.slice(0, 500)}…` : text;
}
