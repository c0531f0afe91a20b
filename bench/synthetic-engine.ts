// SyntheticTokenSource: a benchmark-only Engine that emits N fixed tokens at a set rate (or as fast
// as the event loop allows), so gateway and relay cost can be measured apart from model speed.
// It is not reachable from the agent's CLI; only bench/ constructs it.

import type {
  Engine,
  Generation,
  GenerationPiece,
  GenerationRequest,
  GenerationResult,
} from "../node-agent/engines/engine.ts";
import type { ModelInfo } from "../schema/protocol.ts";

export const SYNTHETIC_MODEL = "bench-synthetic";

export interface SyntheticOptions {
  /** Tokens per second per generation; 0 = as fast as possible (yielding to the event loop every 64). */
  tokensPerSecond?: number;
  /** The text of each token. */
  token?: string;
}

export class SyntheticTokenSource implements Engine {
  readonly name = "synthetic" as const;
  constructor(private readonly options: SyntheticOptions = {}) {}

  async listModels(): Promise<ModelInfo[]> {
    return [{ name: SYNTHETIC_MODEL, engine: "synthetic", contextLength: 1 << 20, loaded: true }];
  }
  async load(): Promise<ModelInfo> {
    return (await this.listModels())[0] as ModelInfo;
  }
  async unload(): Promise<void> {}
  async close(): Promise<void> {}

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    const total = request.params.maxTokens;
    const token = this.options.token ?? "tok ";
    const rate = this.options.tokensPerSecond ?? 0;
    let settle!: (r: GenerationResult) => void;
    const result = new Promise<GenerationResult>((r) => {
      settle = r;
    });
    async function* run(): AsyncGenerator<GenerationPiece> {
      const started = performance.now();
      let produced = 0;
      try {
        while (produced < total) {
          if (signal.aborted) return;
          if (rate > 0) {
            const due = started + (produced * 1000) / rate;
            const wait = due - performance.now();
            if (wait > 1) await new Promise((r) => setTimeout(r, wait));
          } else if (produced % 64 === 63) {
            await new Promise((r) => setImmediate(r));
          }
          produced++;
          yield { text: token, tokens: 1 };
        }
      } finally {
        settle({
          finishReason: signal.aborted ? "cancelled" : produced >= total ? "length" : "cancelled",
          usage: { promptTokens: 1, completionTokens: produced },
        });
      }
    }
    const iterable = run();
    return { [Symbol.asyncIterator]: () => iterable, result };
  }
}
