// OpenAI chat completions <-> Orchard: request mapping and the response/chunk objects the
// official SDKs expect (non-streaming body, chat.completion.chunk stream, usage).

import type { ChatCompletionRequest } from "../../schema/api.ts";
import { Limits } from "../../schema/api.ts";
import type { ChatMessage, SamplingParams } from "../../schema/protocol.ts";

/** A finished generation, as the non-streamed chat response reports it. */
export interface Completion {
  text: string;
  finishReason: "stop" | "length" | "cancelled";
  promptTokens: number;
  completionTokens: number;
}

/** OpenAI lets max_tokens default to "as much as fits"; Orchard bounds it. */
export const DEFAULT_CHAT_MAX_TOKENS = 512;

export function chatMessages(request: ChatCompletionRequest): ChatMessage[] {
  return request.messages.map((m) => ({
    role: m.role === "developer" ? "system" : m.role,
    content: m.content,
  }));
}

export function chatParams(request: ChatCompletionRequest): SamplingParams {
  return samplingParams({
    maxTokens: request.max_completion_tokens ?? request.max_tokens ?? DEFAULT_CHAT_MAX_TOKENS,
    temperature: request.temperature,
    topP: request.top_p,
    seed: request.seed,
    stop: request.stop,
  });
}

/** Drops absent (null/undefined) fields and normalizes `stop` to a list. */
export function samplingParams(input: {
  maxTokens: number;
  temperature?: number | null;
  topP?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}): SamplingParams {
  const params: SamplingParams = { maxTokens: Math.min(input.maxTokens, Limits.maxTokens) };
  if (input.temperature != null) params.temperature = input.temperature;
  if (input.topP != null) params.topP = input.topP;
  if (input.seed != null) params.seed = input.seed;
  if (input.stop != null) {
    const stop = typeof input.stop === "string" ? [input.stop] : input.stop;
    if (stop.length > 0) params.stop = stop;
  }
  return params;
}

/** OpenAI has no "cancelled" finish reason; a generation cut short by us ended normally for the SDK. */
export function openAIFinishReason(reason: Completion["finishReason"]): "stop" | "length" {
  return reason === "length" ? "length" : "stop";
}

export function openAIUsage(promptTokens: number, completionTokens: number) {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

export interface ChatIdentity {
  id: string;
  created: number;
  model: string;
}

export function chatIdentity(requestId: string, model: string, now = Date.now()): ChatIdentity {
  return { id: `chatcmpl-${requestId}`, created: Math.floor(now / 1000), model };
}

export function chatCompletion(identity: ChatIdentity, completion: Completion) {
  return {
    ...identity,
    object: "chat.completion" as const,
    choices: [
      {
        index: 0,
        message: { role: "assistant" as const, content: completion.text, refusal: null },
        logprobs: null,
        finish_reason: openAIFinishReason(completion.finishReason),
      },
    ],
    usage: openAIUsage(completion.promptTokens, completion.completionTokens),
    system_fingerprint: null,
  };
}

export function chatChunk(
  identity: ChatIdentity,
  delta: { role?: "assistant"; content?: string },
  finishReason: "stop" | "length" | null,
  includeUsage: boolean,
) {
  return {
    ...identity,
    object: "chat.completion.chunk" as const,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
    system_fingerprint: null,
    ...(includeUsage ? { usage: null } : {}),
  };
}

/** The extra last chunk sent when `stream_options.include_usage` is set: no choices, just usage. */
export function chatUsageChunk(identity: ChatIdentity, promptTokens: number, completionTokens: number) {
  return {
    ...identity,
    object: "chat.completion.chunk" as const,
    choices: [],
    system_fingerprint: null,
    usage: openAIUsage(promptTokens, completionTokens),
  };
}
