// The MLX generation loop in the child: prefill in chunks, then one token at a time with the
// request's sampling (greedy at temperature 0; else temperature, top-p and a per-request seeded
// key, so concurrent generations do not share a random stream), stop sequences and EOS, a check
// for cancellation between steps, and turning tokens into text without splitting a character.
import { randomInt } from "node:crypto";
import type { SamplingParams, Usage } from "../../../schema/protocol.ts";
import type { GenerationPiece, GenerationResult } from "../engine.ts";
import { StopSequences } from "../stop-sequences.ts";
import type { LoadedMlxModel } from "./model-loader.ts";
import type { MlxArray, MlxCore, MlxRuntime, Tokenizer } from "./runtime.ts";

/** The llama.cpp engine's defaults, so a request means the same on either engine. */
const DEFAULT_TEMPERATURE = 0.8;
const DEFAULT_TOP_P = 0.95;
/** Prompt tokens per forward pass, as mlx-lm does, so a long prompt does not take all memory at once. */
const PREFILL_CHUNK = 512;
/**
 * node-mlx frees an array's memory only when V8 collects its wrapper and the event loop then runs
 * the finalizer: a minor GC every few steps (measured: RSS flat at ~75 MB over 2,000 tokens, and
 * no slower than none), and a turn of the event loop after every step.
 */
const GC_EVERY_STEPS = 8;
/** A UTF-8 character spans at most 4 byte tokens; wait that long for the rest of a split character. */
const MAX_UTF8_TOKENS = 4;
/** Tokens of recent context decoded with new ones, so leading spaces and merges come out right. */
const DETOKENIZER_CONTEXT = 8;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export function collectGarbage(type: "minor" | "major" = "minor"): void {
  globalThis.gc?.({ type, execution: "sync" } as never);
}

/** Generates after `prompt` until EOS, a stop sequence, max tokens, the context's end, or `cancelled()`. */
export async function decode(
  runtime: MlxRuntime,
  loaded: LoadedMlxModel,
  prompt: number[],
  params: SamplingParams,
  cancelled: () => boolean,
  emit: (piece: GenerationPiece) => void,
): Promise<GenerationResult> {
  const { mx } = runtime;
  const usage: Usage = { promptTokens: prompt.length, completionTokens: 0 };
  const limit = Math.min(params.maxTokens, loaded.contextLength - prompt.length);
  const cache = runtime.newKvCache(loaded.model);
  const sample = sampler(mx, params);
  const text = new TokenText(loaded.tokenizer, prompt);
  const stops = new StopSequences(params.stop ?? []);

  let logits: MlxArray | undefined;
  for (let offset = 0; offset < prompt.length; offset += PREFILL_CHUNK) {
    if (cancelled()) return { finishReason: "cancelled", usage };
    const chunk = prompt.slice(offset, offset + PREFILL_CHUNK);
    logits = loaded.model.forward(mx.array([chunk], mx.int32), undefined, cache);
    if (offset + PREFILL_CHUNK < prompt.length) mx.eval(cache.map((layer) => layer.state));
    collectGarbage();
    await nextTurn();
  }
  let finishReason: GenerationResult["finishReason"] = "length";
  while (logits && usage.completionTokens < limit) {
    if (cancelled()) {
      finishReason = "cancelled";
      break;
    }
    const token = sample(logits.index(mx.Slice(), -1));
    if (loaded.eosTokens.has(token)) {
      finishReason = "stop";
      break;
    }
    usage.completionTokens++;
    const whole = text.push(token);
    if (whole) {
      const piece = stops.push(whole.text, whole.tokens);
      if (piece.text !== "" || piece.tokens > 0) emit({ text: piece.text, tokens: piece.tokens });
      if (piece.stopped) return { finishReason: "stop", usage };
    }
    if (usage.completionTokens >= limit) break;
    logits = loaded.model.forward(mx.array([[token]], mx.int32), undefined, cache);
    if (usage.completionTokens % GC_EVERY_STEPS === 0) collectGarbage();
    await nextTurn();
  }
  const rest = stops.end(text.flush());
  if (rest.text !== "" || rest.tokens > 0) emit(rest);
  return { finishReason, usage };
}

/** Picks the next token from the last position's logits [1, vocab]. */
function sampler(mx: MlxCore, params: SamplingParams): (logits: MlxArray) => number {
  const temperature = params.temperature ?? DEFAULT_TEMPERATURE;
  if (temperature === 0) return (logits) => mx.argmax(logits, -1).item();
  const topP = params.topP ?? DEFAULT_TOP_P;
  let key = mx.random.key(params.seed === undefined ? randomInt(2 ** 32) : params.seed >>> 0);
  return (logits) => {
    const [next, sub] = mx.random.split(key) as unknown as [MlxArray, MlxArray];
    key = next;
    const scaled = mx.multiply(logits, 1 / temperature);
    if (topP >= 1) return mx.random.categorical(scaled, -1, undefined, undefined, sub).item();
    // Keep the most likely tokens whose probabilities add up to topP; sample among them.
    const probs = mx.softmax(scaled, -1);
    const order = mx.argsort(probs, -1);
    const sorted = mx.takeAlongAxis(probs, order, -1);
    const kept = mx.where(mx.greater(mx.cumsum(sorted, -1), 1 - topP), sorted, mx.zerosLike(sorted));
    const choice = mx.random.categorical(mx.log(kept), -1, undefined, undefined, sub);
    return mx.takeAlongAxis(order, choice.reshape(1, 1), -1).item();
  };
}

/**
 * Detokenizes generated tokens: each step decodes the recent context with the new tokens and keeps
 * what was added, holding back a split UTF-8 character until it is whole.
 */
export class TokenText {
  private pending: number[] = [];
  private recent: number[];

  constructor(
    private readonly tokenizer: Tokenizer,
    context: number[],
  ) {
    this.recent = context.slice(-DETOKENIZER_CONTEXT);
  }

  /** The text of the tokens so far once it is whole, with how many tokens it took; else undefined. */
  push(token: number): GenerationPiece | undefined {
    this.pending.push(token);
    const text = this.added();
    if (text.endsWith("\uFFFD") && this.pending.length < MAX_UTF8_TOKENS) return undefined;
    return this.release(text);
  }

  /** Whatever is still pending, whole or not: generation is over. */
  flush(): GenerationPiece {
    if (this.pending.length === 0) return { text: "", tokens: 0 };
    return this.release(this.added());
  }

  private added(): string {
    const before = this.decode(this.recent);
    const after = this.decode([...this.recent, ...this.pending]);
    return after.startsWith(before) ? after.slice(before.length) : this.decode(this.pending);
  }

  private decode(tokens: number[]): string {
    return this.tokenizer.decode(tokens, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  }

  private release(text: string): GenerationPiece {
    const tokens = this.pending.length;
    this.recent = [...this.recent, ...this.pending].slice(-DETOKENIZER_CONTEXT);
    this.pending = [];
    return { text, tokens };
  }
}
