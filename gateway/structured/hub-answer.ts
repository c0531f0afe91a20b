// Reading the hub's /generate answers inside the gateway (structured outputs validate them before
// the caller sees anything): the whole JSON answer, or its SSE stream event by event.
import type { ErrorCode, GenerateResponse } from "../../schema/api.ts";
import { GatewayError } from "../errors.ts";

/** The non-streamed answer's body; anything else from a 200 is the hub's fault (UPSTREAM_ERROR). */
export async function readGenerateAnswer(response: Response): Promise<GenerateResponse> {
  const body = (await response.json().catch(() => null)) as GenerateResponse | null;
  if (body === null || typeof body.text !== "string" || typeof body.tokens_generated !== "number") {
    throw new GatewayError("UPSTREAM_ERROR", "the agent pool's answer was not a generate response");
  }
  return body;
}

/** One event of the hub's /generate stream. */
export type HubStreamEvent =
  | { event: "chunk"; text: string }
  | { event: "done"; summary: Omit<GenerateResponse, "text"> }
  | { event: "error"; code: ErrorCode; message: string };

/** Set by hubStreamEvents while it reads: stops the reading (and cancels the hub's body). */
export interface StreamStopper {
  stop: (() => void) | null;
}

/**
 * The hub's /generate SSE (`chunk` {text}, then `done` or `error`) as events. A stream that ends
 * without either is reported as an UPSTREAM_ERROR event. Stopping the iteration, or `stopper`,
 * cancels the body (and, through the hub, the generation); a stopped stream yields nothing more.
 */

export async function* hubStreamEvents(
  response: Response,
  stopper: StreamStopper = { stop: null },
): AsyncGenerator<HubStreamEvent> {
  if (response.body === null) {
    yield { event: "error", code: "UPSTREAM_ERROR", message: "the agent pool's stream had no body" };
    return;
  }
  // Read directly (not through a TextDecoderStream), so that cancelling the reader cancels the body.
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let ended = false;
  let stopped = false;
  stopper.stop = () => {
    stopped = true;
    reader.cancel().catch(() => {});
  };
  try {
    for (;;) {
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event !== null) {
          if (event.event !== "chunk") ended = true;
          yield event;
          if (ended) return;
        }
        end = buffer.indexOf("\n\n");
      }
      let read: ReadableStreamReadResult<Uint8Array>;
      try {
        read = await reader.read();
      } catch {
        ended = true;
        if (stopped) return;
        yield { event: "error", code: "UPSTREAM_ERROR", message: "the agent pool's stream failed" };
        return;
      }
      const { done, value } = read;
      if (done || stopped) break;
      buffer += decoder.decode(value, { stream: true });
    }
    ended = true;
    if (stopped) return;
    yield { event: "error", code: "UPSTREAM_ERROR", message: "the agent pool's stream ended early" };
  } finally {
    stopper.stop = null;
    if (!ended) await reader.cancel().catch(() => {});
    else reader.releaseLock();
  }
}

function parseEvent(block: string): HubStreamEvent | null {
  let name: string | undefined;
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data.push(line.slice(6));
  }
  if (data.length === 0) return null;
  let payload: unknown;
  try {
    payload = JSON.parse(data.join("\n"));
  } catch {
    return { event: "error", code: "UPSTREAM_ERROR", message: "the agent pool's stream was malformed" };
  }
  const body = payload as Record<string, unknown>;
  if (name === "chunk" && typeof body.text === "string") return { event: "chunk", text: body.text };
  if (name === "done") return { event: "done", summary: body as Omit<GenerateResponse, "text"> };
  if (name === "error") {
    const error = body.error as { code?: ErrorCode; message?: string } | undefined;
    return {
      event: "error",
      code: error?.code ?? "UPSTREAM_ERROR",
      message: error?.message ?? "the generation failed",
    };
  }
  return null;
}
