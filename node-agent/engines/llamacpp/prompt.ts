// Prompt building for llama.cpp: a raw prompt's tokens, or chat messages rendered with the model's
// own chat template, and the stop triggers that template ends a reply with.
import {
  type ChatHistoryItem,
  type ChatWrapper,
  type LlamaModel,
  resolveChatWrapper,
  type Token,
} from "node-llama-cpp";
import { EngineError, type GenerationRequest } from "../engine.ts";

export interface RenderedPrompt {
  tokens: Token[];
  /** Special tokens that end the reply (besides the model's end-of-generation tokens). */
  stopTokens: Set<Token>;
  /** The request's stop sequences, and the template's plain-text ones. */
  stopTexts: string[];
}

/**
 * The model's own Jinja template when it has one, as llama-server --jinja does. The default "auto"
 * compares it with every built-in wrapper first, which takes a second per load.
 */
export function chatWrapperFor(model: LlamaModel): ChatWrapper {
  const hasTemplate = model.fileInfo.metadata.tokenizer?.chat_template !== undefined;
  return resolveChatWrapper(model, { type: hasTemplate ? "jinjaTemplate" : "auto" });
}

/** Tokens for a raw prompt, or for chat messages rendered with the model's own chat template. */
export function renderPrompt(
  model: LlamaModel,
  chatWrapper: ChatWrapper,
  request: GenerationRequest,
): RenderedPrompt {
  const stopTokens = new Set<Token>();
  const stopTexts = [...(request.params.stop ?? [])];
  if (request.prompt !== undefined) {
    // As LlamaCompletion does: BOS when the model asks for it, then the text.
    const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
    const text = model.tokenize(request.prompt, false, bos === null ? undefined : "trimLeadingSpace");
    const tokens = bos === null ? text : [bos, ...text];
    if (tokens.length === 0) throw new EngineError("INVALID_REQUEST", "the prompt is empty");
    return { tokens, stopTokens, stopTexts };
  }
  const messages = request.messages ?? [];
  const history: ChatHistoryItem[] = messages.map((m) =>
    m.role === "assistant" ? { type: "model", response: [m.content] } : { type: m.role, text: m.content },
  );
  // A trailing assistant message is a prefix the model continues; otherwise it starts a new reply.
  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  const state = chatWrapper.generateContextState({ chatHistory: history });
  for (const trigger of state.stopGenerationTriggers) {
    const plain = trigger.values.every((v) => typeof v === "string");
    if (plain) {
      const text = trigger.toString();
      if (text !== "") stopTexts.push(text);
      continue;
    }
    // A special token such as <|im_end|>; longer mixed triggers start with one the model already stops on.
    const tokens = trigger.tokenize(model.tokenizer);
    if (tokens.length === 1 && !model.isEogToken(tokens[0])) stopTokens.add(tokens[0] as Token);
  }
  return { tokens: state.contextText.tokenize(model.tokenizer), stopTokens, stopTexts };
}
