// The objects the official OpenAI SDKs expect back from chat completions: the non-streamed body,
// chat.completion.chunk messages and usage. The hub renders them (render.ts).

/** A finished generation, as the non-streamed chat response reports it. */
export interface Completion {
  text: string;
  finishReason: "stop" | "length" | "cancelled";
  promptTokens: number;
  completionTokens: number;
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
