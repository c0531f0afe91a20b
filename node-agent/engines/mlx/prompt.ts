// Prompt tokens for an MLX model: a raw prompt through the tokenizer (with the BOS its post-processor
// adds), or chat messages rendered with the model's own Jinja chat template.
import type { ChatMessage } from "../../../schema/protocol.ts";
import { EngineError } from "../engine.ts";
import type { LoadedMlxModel } from "./model-loader.ts";

export function renderPrompt(
  loaded: LoadedMlxModel,
  request: { prompt?: string; messages?: ChatMessage[] },
): number[] {
  const { tokenizer } = loaded;
  if (request.prompt !== undefined) {
    const tokens = tokenizer.encode(request.prompt);
    // Some tokenizers end every encoding with EOS, which would end the generation at once.
    if (tokens.length > 1 && loaded.eosTokens.has(tokens.at(-1) as number)) tokens.pop();
    if (tokens.length === 0) throw new EngineError("INVALID_REQUEST", "the prompt is empty");
    return tokens;
  }
  const messages = request.messages ?? [];
  // A trailing assistant message is a prefix the model continues: the turns before it, the
  // template's opening of a reply, then that text as it is.
  const last = messages.at(-1);
  const continued = last?.role === "assistant" ? last.content : undefined;
  const turns = continued === undefined ? messages : messages.slice(0, -1);
  let tokens: number[];
  try {
    tokens = tokenizer.apply_chat_template(turns, {
      add_generation_prompt: true,
      tokenize: true,
    }) as number[];
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (/chat_template/.test(message)) {
      throw new EngineError(
        "INVALID_REQUEST",
        "this model has no chat template: send a prompt instead of messages",
      );
    }
    throw new EngineError("INVALID_REQUEST", "the model's chat template failed on these messages", false, {
      cause: err,
    });
  }
  if (continued) tokens = [...tokens, ...tokenizer.encode(continued, { add_special_tokens: false })];
  return tokens;
}
