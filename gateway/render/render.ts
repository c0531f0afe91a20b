// What a caller receives for an inference request, rendered by the hub straight from the agent's
// frames: SSE messages for a stream, one JSON document otherwise. The Worker hands the hub's body
// to the caller as it is, so nothing on the path decodes, re-parses or re-encodes it.
//
// The shape of the answer (which API, streamed or not) travels in DispatchRequest.response.
import type { ErrorCode, GenerateResponse } from "../../schema/api.ts";
import type { ResponseShape } from "../../schema/hub.ts";
import type { FinishReason, Usage } from "../../schema/protocol.ts";
import { GatewayError, openAIErrorBody } from "../errors.ts";
import {
  chatChunk,
  chatCompletion,
  chatIdentity,
  chatUsageChunk,
  openAIFinishReason,
} from "./openai-shapes.ts";
import { SSE_HEADERS, sseMessage } from "./sse.ts";

/** How the generation ended. */
export interface Ending {
  finishReason: FinishReason;
  usage: Usage;
}

/** The messages of one streamed response, in order: opening, chunks, then done or error. */
export interface StreamRenderer {
  /** Written with the first chunk, before it. */
  opening(): string;
  /** "" when the chunk adds nothing the caller would see. */
  chunk(text: string): string;
  done(ending: Ending): string;
  /** After the first chunk, a failure is an event in the stream: the status was already sent. */
  error(code: ErrorCode, message: string): string;
}

export function streamRenderer(shape: ResponseShape, model: string): StreamRenderer {
  return shape.api === "chat" ? new ChatStream(shape, model) : new GenerateStream(shape, model);
}

export function contentType(shape: ResponseShape): string {
  return shape.stream ? SSE_HEADERS["Content-Type"] : "application/json";
}

/** The whole non-streamed answer. */
export function completionBody(shape: ResponseShape, model: string, text: string, ending: Ending): string {
  if (shape.api === "chat") {
    return JSON.stringify(
      chatCompletion(chatIdentity(shape.requestId, model, shape.receivedAt), {
        text,
        finishReason: ending.finishReason,
        promptTokens: ending.usage.promptTokens,
        completionTokens: ending.usage.completionTokens,
      }),
    );
  }
  const body: GenerateResponse = { text, ...generateSummary(shape, model, ending) };
  return JSON.stringify(body);
}

function generateSummary(
  shape: ResponseShape,
  model: string,
  ending: Ending,
): Omit<GenerateResponse, "text"> {
  return {
    tokens_generated: ending.usage.completionTokens,
    prompt_tokens: ending.usage.promptTokens,
    finish_reason: ending.finishReason,
    latency_ms: Date.now() - shape.receivedAt,
    model_name: model,
    request_id: shape.requestId,
  };
}

/** /generate: `chunk` events ({text}), then `done` (the response without its text) or `error`. */
class GenerateStream implements StreamRenderer {
  constructor(
    private readonly shape: ResponseShape,
    private readonly model: string,
  ) {}

  opening(): string {
    return "";
  }

  chunk(text: string): string {
    return `event: chunk\ndata: {"text":${JSON.stringify(text)}}\n\n`;
  }

  done(ending: Ending): string {
    return sseMessage(generateSummary(this.shape, this.model, ending), "done");
  }

  error(code: ErrorCode, message: string): string {
    return sseMessage({ error: { code, message, requestId: this.shape.requestId } }, "error");
  }
}

/**
 * /v1 chat: a role delta, content deltas, a finish chunk, the usage chunk if asked, then [DONE].
 * A failure is a data line carrying `error` (the SDKs raise an APIError for it), then [DONE], so
 * clients that only wait for [DONE] also see the stream end.
 *
 * Content chunks are the hot path: each is a prefix and suffix computed once per stream around
 * the JSON-encoded text (the same fields as chatChunk() in openai-shapes.ts, which the tests check).
 */
class ChatStream implements StreamRenderer {
  readonly #identity: ReturnType<typeof chatIdentity>;
  readonly #prefix: string;
  readonly #suffix: string;

  constructor(
    private readonly shape: ResponseShape,
    model: string,
  ) {
    this.#identity = chatIdentity(shape.requestId, model, shape.receivedAt);
    const head = JSON.stringify({ ...this.#identity, object: "chat.completion.chunk" });
    this.#prefix = `data: ${head.slice(0, -1)},"choices":[{"index":0,"delta":{"content":`;
    this.#suffix = `},"logprobs":null,"finish_reason":null}],"system_fingerprint":null${
      shape.includeUsage ? ',"usage":null' : ""
    }}\n\n`;
  }

  opening(): string {
    return sseMessage(this.#chunk({ role: "assistant", content: "" }, null));
  }

  chunk(text: string): string {
    return text === "" ? "" : `${this.#prefix}${JSON.stringify(text)}${this.#suffix}`;
  }

  done(ending: Ending): string {
    let out = sseMessage(this.#chunk({}, openAIFinishReason(ending.finishReason)));
    if (this.shape.includeUsage) {
      out += sseMessage(
        chatUsageChunk(this.#identity, ending.usage.promptTokens, ending.usage.completionTokens),
      );
    }
    return `${out}${sseMessage("[DONE]")}`;
  }

  error(code: ErrorCode, message: string): string {
    return `${sseMessage(openAIErrorBody(new GatewayError(code, message)))}${sseMessage("[DONE]")}`;
  }

  #chunk(delta: { role?: "assistant"; content?: string }, finishReason: "stop" | "length" | null) {
    return chatChunk(this.#identity, delta, finishReason, this.shape.includeUsage);
  }
}
