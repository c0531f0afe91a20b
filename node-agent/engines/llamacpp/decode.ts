// The llama.cpp generation loop: one token at a time straight from the context sequence, so
// streaming, stop sequences, token counts and cancellation are exact; plus turning tokens into
// text without splitting a UTF-8 character.
import { randomInt } from "node:crypto";
import type { LlamaContextSequence, LlamaGrammarEvaluationState, LlamaModel, Token } from "node-llama-cpp";
import type { SamplingParams, Usage } from "../../../schema/protocol.ts";
import type { GenerationPiece, GenerationResult } from "../engine.ts";
import { StopSequences } from "../stop-sequences.ts";
import type { RenderedPrompt } from "./prompt.ts";

/** llama.cpp server's defaults, for whatever the request leaves out. */
const DEFAULT_SAMPLING = { temperature: 0.8, topP: 0.95, topK: 40, minP: 0.05 } as const;
/** A UTF-8 character spans at most 4 byte tokens; wait that long for the rest of a split character. */
const MAX_UTF8_TOKENS = 4;
/** Tokens of recent context given to the detokenizer so leading spaces come out right. */
const DETOKENIZER_CONTEXT = 16;

/** The most tokens a generation may produce: its max_tokens, or what the context has left. */
export function completionLimit(params: SamplingParams, contextSize: number, prompt: RenderedPrompt): number {
  // The last generated token is never evaluated, so prompt + completion may fill the context exactly.
  return Math.min(params.maxTokens, contextSize - prompt.tokens.length);
}

/**
 * Generates into `usage.completionTokens` and `emit` until a stop, the limit, or `stopped` fires.
 * With a grammar, llama.cpp samples only tokens it allows and accepts each sampled token into it
 * (AddonContext's sampleToken), and once the grammar is complete only an end-of-generation token.
 */
export async function decode(
  sequence: LlamaContextSequence,
  target: { model: LlamaModel; contextSize: number },
  prompt: RenderedPrompt,
  params: SamplingParams,
  stopped: AbortSignal,
  usage: Usage,
  emit: (piece: GenerationPiece) => void,
  grammar?: LlamaGrammarEvaluationState,
): Promise<GenerationResult["finishReason"]> {
  const limit = completionLimit(params, target.contextSize, prompt);
  const text = new TokenText(target.model, prompt.tokens);
  const stops = new StopSequences(prompt.stopTexts);
  const tokens = sequence.evaluate(prompt.tokens, {
    ...sampling(params),
    ...(grammar ? { grammarEvaluationState: grammar } : {}),
  });
  let finishReason: GenerationResult["finishReason"] = "length";
  try {
    while (usage.completionTokens < limit) {
      if (stopped.aborted) {
        finishReason = "cancelled";
        break;
      }
      const next = await tokens.next();
      // evaluate() ends by itself at an end-of-generation token.
      if (next.done || prompt.stopTokens.has(next.value)) {
        finishReason = "stop";
        break;
      }
      usage.completionTokens++;
      const whole = text.push(next.value);
      if (!whole) continue;
      const piece = stops.push(whole.text, whole.tokens);
      if (piece.text !== "") emit({ text: piece.text, tokens: piece.tokens });
      if (piece.stopped) return "stop";
    }
    const rest = stops.end(text.flush());
    if (rest.text !== "") emit(rest);
    return finishReason;
  } finally {
    await tokens.return();
  }
}

function sampling(params: SamplingParams) {
  const temperature = params.temperature ?? DEFAULT_SAMPLING.temperature;
  if (temperature === 0) return { temperature: 0 };
  return {
    temperature,
    topP: params.topP ?? DEFAULT_SAMPLING.topP,
    topK: DEFAULT_SAMPLING.topK,
    minP: DEFAULT_SAMPLING.minP,
    // node-llama-cpp's own default is the current second, which gives concurrent requests equal output.
    seed: params.seed === undefined ? randomInt(2 ** 32) : params.seed >>> 0,
  };
}

/** Detokenizes generated tokens, holding back a split UTF-8 character until it is whole. */
class TokenText {
  private pending: Token[] = [];
  private recent: Token[];

  constructor(
    private readonly model: LlamaModel,
    context: Token[],
  ) {
    this.recent = context.slice(-DETOKENIZER_CONTEXT);
  }

  /** The text of the tokens so far once it is whole, with how many tokens it took; else undefined. */
  push(token: Token): GenerationPiece | undefined {
    this.pending.push(token);
    const decoded = this.model.detokenize(this.pending, false, this.recent);
    if (decoded.endsWith("\uFFFD") && this.pending.length < MAX_UTF8_TOKENS) return undefined;
    return this.release(decoded);
  }

  /** Whatever is still pending, whole or not: generation is over. */
  flush(): GenerationPiece {
    if (this.pending.length === 0) return { text: "", tokens: 0 };
    return this.release(this.model.detokenize(this.pending, false, this.recent));
  }

  private release(text: string): GenerationPiece {
    const tokens = this.pending.length;
    this.recent = [...this.recent, ...this.pending].slice(-DETOKENIZER_CONTEXT);
    this.pending = [];
    return { text, tokens };
  }
}
