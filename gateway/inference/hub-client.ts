// The Worker's side of the hub interface (hub/dispatch.ts): forwards one inference request to its
// pool's AgentHub and reads back either an error decided before streaming, or NDJSON events.

import { GatewayError } from "../errors.ts";
import type { AgentHub } from "../hub/agent-hub.ts";
import {
  DEFAULT_POOL,
  DispatchErrorBody,
  type DispatchRequest,
  HubEvent,
  HubHeader,
} from "../hub/dispatch.ts";
import { describeError, log } from "../log.ts";

export function poolHub(env: Env, pool: string = DEFAULT_POOL): DurableObjectStub<AgentHub> {
  return (env.AGENT_HUB as DurableObjectNamespace<AgentHub>).getByName(pool);
}

export async function dispatchToHub(
  env: Env,
  request: DispatchRequest,
  pool = DEFAULT_POOL,
): Promise<HubStream> {
  let response: Response;
  try {
    response = await poolHub(env, pool).fetch("https://hub/dispatch", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
  } catch (err) {
    log("error", "hub unreachable", { requestId: request.requestId, pool, ...describeError(err) });
    throw new GatewayError("UPSTREAM_ERROR", "the agent pool is unavailable", { cause: err });
  }
  if (!response.ok || response.body === null) throw await hubFailure(response);
  return new HubStream(
    response.headers.get(HubHeader.model) ?? request.model ?? "unknown",
    response.headers.get(HubHeader.fallback),
    response.headers.get(HubHeader.agent) ?? "unknown",
    response.body,
  );
}

async function hubFailure(response: Response): Promise<GatewayError> {
  const parsed = DispatchErrorBody.safeParse(await response.json().catch(() => null));
  if (!parsed.success)
    return new GatewayError("UPSTREAM_ERROR", `the agent pool answered ${response.status}`);
  const retryAfter = Number(response.headers.get("Retry-After"));
  return new GatewayError(parsed.data.code, parsed.data.message, {
    retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
  });
}

/** The events of one dispatched request, read as they arrive. */
export class HubStream {
  readonly #reader: ReadableStreamDefaultReader<string>;

  constructor(
    /** The model that answers (the pool's default when the request named none, or a fallback). */
    readonly model: string,
    /** The requested model when a MODEL_FALLBACKS model answers instead; else null. */
    readonly fallbackFor: string | null,
    readonly agentId: string,
    body: ReadableStream<Uint8Array>,
  ) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }

  /**
   * Yields events until `done` or `error`. A stream that stops, breaks (the hub restarted) or
   * carries garbage ends with an UPSTREAM_ERROR event, so no caller is left without an ending.
   */
  async *events(): AsyncGenerator<HubEvent> {
    let buffer = "";
    for (;;) {
      let read: ReadableStreamReadResult<string>;
      try {
        read = await this.#reader.read();
      } catch (err) {
        log("warn", "hub stream broke", { agentId: this.agentId, ...describeError(err) });
        break;
      }
      if (read.done) break;
      buffer += read.value;
      for (let newline = buffer.indexOf("\n"); newline >= 0; newline = buffer.indexOf("\n")) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line === "") continue;
        const event = parseEvent(line);
        if (event === null) {
          log("error", "malformed hub event", { agentId: this.agentId });
          yield { type: "error", code: "UPSTREAM_ERROR", message: "the agent pool sent a malformed event" };
          await this.cancel();
          return;
        }
        yield event;
        if (event.type !== "chunk") return;
      }
    }
    yield { type: "error", code: "UPSTREAM_ERROR", message: "the agent stream ended unexpectedly" };
  }

  /** The caller left: cancelling the hub's response makes it send `cancel` to the agent. */
  async cancel(): Promise<void> {
    await this.#reader.cancel("client disconnected").catch(() => {});
  }
}

function parseEvent(line: string): HubEvent | null {
  try {
    const parsed = HubEvent.safeParse(JSON.parse(line));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export interface Completion {
  text: string;
  finishReason: "stop" | "length" | "cancelled";
  promptTokens: number;
  completionTokens: number;
}

/** Reads a whole completion (non-streaming requests); an error event becomes a GatewayError. */
export async function collectCompletion(stream: HubStream): Promise<Completion> {
  const parts: string[] = [];
  for await (const event of stream.events()) {
    if (event.type === "chunk") parts.push(event.text);
    else if (event.type === "error") throw new GatewayError(event.code, event.message);
    else {
      return {
        text: parts.join(""),
        finishReason: event.finishReason,
        promptTokens: event.usage.promptTokens,
        completionTokens: event.usage.completionTokens,
      };
    }
  }
  throw new GatewayError("UPSTREAM_ERROR", "the agent stream ended unexpectedly");
}
