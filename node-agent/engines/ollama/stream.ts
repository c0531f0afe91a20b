// One generation on an Ollama server: the request (/api/chat for messages, /api/generate in raw
// mode for a prompt, so both mean what they mean for every engine), its sampling options, and the
// NDJSON stream turned into pieces with honest token counts.
//
// Ollama streams about one token per line but counts tokens only in its last line (`eval_count`);
// a line may carry several tokens (text held back while it could still become a stop sequence)
// or none of the visible text (a thinking model's reasoning). So each piece is sent one line late,
// counted as one token, and the last piece takes what `eval_count` says the earlier ones left.
import type { ChatResponse, GenerateResponse, Options } from "ollama";
import type { SamplingParams } from "../../../schema/protocol.ts";
import type { GenerationPiece, GenerationRequest, GenerationResult } from "../engine.ts";
import { type NdjsonTarget, postNdjson } from "./ndjson-client.ts";

export interface OllamaCall {
  /** The server and the engine's connection pool (ndjson-client.ts). */
  target: NdjsonTarget;
  tag: string;
  request: GenerationRequest;
  params: SamplingParams;
  /** Options the model is loaded with (num_ctx): the same on every request, or Ollama reloads it. */
  modelOptions: Partial<Options>;
  keepAlive: string | number | undefined;
}

type Part = ChatResponse | GenerateResponse;

/** Ollama's `options` for the request's sampling parameters (num_predict is max tokens). */
export function samplingOptions(params: SamplingParams): Partial<Options> {
  return {
    num_predict: params.maxTokens,
    ...(params.temperature === undefined ? {} : { temperature: params.temperature }),
    ...(params.topP === undefined ? {} : { top_p: params.topP }),
    ...(params.seed === undefined ? {} : { seed: params.seed }),
    ...(params.stop === undefined ? {} : { stop: params.stop }),
  };
}

/**
 * Streams the call's pieces into `emit` until Ollama's `done` line, or until `stopped` fires (then
 * finishReason is "cancelled"). Failures are thrown as they come (asOllamaError maps them).
 */
export async function streamOllama(
  call: OllamaCall,
  stopped: AbortSignal,
  emit: (piece: GenerationPiece) => void,
): Promise<GenerationResult> {
  const { target, tag, request, params } = call;
  const common = {
    model: tag,
    stream: true as const,
    options: { ...call.modelOptions, ...samplingOptions(params) },
    ...(request.format === undefined ? {} : { format: request.format }),
    ...(call.keepAlive === undefined ? {} : { keep_alive: call.keepAlive }),
  };
  let sent = 0;
  let held: string | undefined;
  const cancelled = (): GenerationResult => ({
    finishReason: "cancelled",
    usage: { promptTokens: 0, completionTokens: sent },
  });
  try {
    const parts: AsyncIterable<Part> = request.messages
      ? postNdjson<ChatResponse>(target, "/api/chat", { ...common, messages: request.messages }, stopped)
      : postNdjson<GenerateResponse>(
          target,
          "/api/generate",
          { ...common, prompt: request.prompt ?? "", raw: true },
          stopped,
        );
    for await (const part of parts) {
      if (stopped.aborted) return cancelled();
      if (part.done) {
        // Whatever eval_count says beyond the pieces sent goes with the last one (at least its own token).
        const total = Math.min(params.maxTokens, Math.max(part.eval_count ?? 0, sent + (held ? 1 : 0)));
        const tokens = total - sent;
        if (held !== undefined || tokens > 0) emit({ text: held ?? "", tokens });
        sent += tokens;
        return {
          finishReason: part.done_reason === "length" ? "length" : "stop",
          usage: { promptTokens: part.prompt_eval_count ?? 0, completionTokens: sent },
        };
      }
      const text = "message" in part ? (part.message?.content ?? "") : (part.response ?? "");
      if (text === "") continue;
      if (held !== undefined) {
        // A server that streams past num_predict: end at the limit, as the request asked.
        if (sent + 2 > params.maxTokens) {
          emit({ text: held, tokens: 1 });
          sent += 1;
          return { finishReason: "length", usage: { promptTokens: 0, completionTokens: sent } };
        }
        emit({ text: held, tokens: 1 });
        sent += 1;
      }
      held = text;
    }
  } catch (err) {
    if (stopped.aborted) return cancelled();
    throw err;
  }
  // postNdjson throws when a stream ends without `done`; this is for a stop mid-iteration.
  return cancelled();
}
