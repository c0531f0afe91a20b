// OpenAI chat completions -> Orchard: a chat request's messages and sampling parameters as the
// agent gets them (response_format and tools: structured/chat.ts). The answer's shapes (completion, chunks, usage) are in render/openai-shapes.ts.

import type { ChatCompletionRequest } from "../../schema/api.ts";
import { Limits } from "../../schema/api.ts";
import type { ChatMessage, SamplingParams } from "../../schema/protocol.ts";
import { renderToolTurns } from "../structured/tools.ts";

/** OpenAI lets max_tokens default to "as much as fits"; Orchard bounds it. */
export const DEFAULT_CHAT_MAX_TOKENS = 512;

/**
 * The conversation in the roles the wire protocol has: developer is system, and a conversation's
 * tool calls and tool results become assistant and user text (structured/tools.ts).
 */
export function chatMessages(request: ChatCompletionRequest): ChatMessage[] {
  return renderToolTurns(request.messages);
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

/** The sampling fields /generate and /generate/structured share (the same names in both bodies). */
export function generateParams(body: {
  max_tokens: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
}): SamplingParams {
  return samplingParams({
    maxTokens: body.max_tokens,
    temperature: body.temperature,
    topP: body.top_p,
    seed: body.seed,
    stop: body.stop,
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
