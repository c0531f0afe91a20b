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

/** A tool call as OpenAI answers it: `arguments` is JSON text. */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** The non-streamed answer when the model called tools: no content, finish_reason "tool_calls". */
export function chatToolCallCompletion(
  identity: ChatIdentity,
  calls: readonly ToolCall[],
  usage: { promptTokens: number; completionTokens: number },
) {
  return {
    ...identity,
    object: "chat.completion" as const,
    choices: [
      {
        index: 0,
        message: { role: "assistant" as const, content: null, refusal: null, tool_calls: [...calls] },
        logprobs: null,
        finish_reason: "tool_calls" as const,
      },
    ],
    usage: openAIUsage(usage.promptTokens, usage.completionTokens),
    system_fingerprint: null,
  };
}

/** A streamed tool call's arguments go out in fragments of at most this many characters. */
export const ARGUMENT_FRAGMENT_CHARS = 32;

/** One delta of a streamed tool call: the first names it (index, id, type, name, ""), the rest add arguments. */
export type ToolCallDelta =
  | { index: number; id: string; type: "function"; function: { name: string; arguments: string } }
  | { index: number; function: { arguments: string } };

/**
 * The chunks of a streamed answer that calls tools, as OpenAI streams them: a role chunk (content
 * null), per call a first delta with its index, id, type and name (arguments ""), then its
 * arguments in fragments; a last chunk with finish_reason "tool_calls"; the usage chunk if asked.
 */
export function chatToolCallChunks(
  identity: ChatIdentity,
  calls: readonly ToolCall[],
  usage: { promptTokens: number; completionTokens: number },
  includeUsage: boolean,
) {
  const chunk = (
    delta: { role?: "assistant"; content?: null; tool_calls?: ToolCallDelta[] },
    finish: "tool_calls" | null,
  ) => ({
    ...identity,
    object: "chat.completion.chunk" as const,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    system_fingerprint: null,
    ...(includeUsage ? { usage: null } : {}),
  });
  const chunks: (ReturnType<typeof chunk> | ReturnType<typeof chatUsageChunk>)[] = [
    chunk({ role: "assistant", content: null }, null),
  ];
  for (const [index, call] of calls.entries()) {
    chunks.push(
      chunk(
        {
          tool_calls: [
            { index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } },
          ],
        },
        null,
      ),
    );
    for (const fragment of fragments(call.function.arguments, ARGUMENT_FRAGMENT_CHARS)) {
      chunks.push(chunk({ tool_calls: [{ index, function: { arguments: fragment } }] }, null));
    }
  }
  chunks.push(chunk({}, "tool_calls"));
  if (includeUsage) chunks.push(chatUsageChunk(identity, usage.promptTokens, usage.completionTokens));
  return chunks;
}

/** `text` in pieces of at most `size` UTF-16 units, never splitting a surrogate pair. */
function fragments(text: string, size: number): string[] {
  const out: string[] = [];
  let piece = "";
  for (const char of text) {
    if (piece.length + char.length > size) {
      out.push(piece);
      piece = "";
    }
    piece += char;
  }
  if (piece !== "") out.push(piece);
  return out;
}
