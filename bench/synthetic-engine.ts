// SyntheticTokenSource: a benchmark-only Engine that emits N fixed tokens at a set rate (or as fast
// as the event loop allows), so gateway and relay cost can be measured apart from model speed.
// It is not reachable from the agent's CLI; only bench/ constructs it.

import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
  type GenerationResult,
} from "../node-agent/engines/engine.ts";
import type { ModelInfo } from "../schema/protocol.ts";

export const SYNTHETIC_MODEL = "bench-synthetic";
/**
 * Every token carries exactly one "~", a byte no framing on the path uses (JSON, NDJSON, SSE, ids),
 * so a caller counts tokens in any response body by counting that byte.
 */
export const SYNTHETIC_TOKEN = "tok~";

export interface SyntheticModel {
  name: string;
  /** Tokens per second per generation; 0 or absent = as fast as possible. */
  tokensPerSecond?: number;
}

export interface SyntheticOptions {
  /** Rate of the default model when `models` is absent; 0 = as fast as possible (yielding every 64). */
  tokensPerSecond?: number;
  /** The text of each token. */
  token?: string;
  /** Models to announce, each with its own rate. Default: one, SYNTHETIC_MODEL. */
  models?: SyntheticModel[];
}

export class SyntheticTokenSource implements Engine {
  readonly name = "synthetic" as const;
  private readonly models: Map<string, SyntheticModel>;

  constructor(private readonly options: SyntheticOptions = {}) {
    const models = options.models ?? [{ name: SYNTHETIC_MODEL, tokensPerSecond: options.tokensPerSecond }];
    this.models = new Map(models.map((m) => [m.name, m]));
  }

  async listModels(): Promise<ModelInfo[]> {
    return [...this.models.keys()].map((name) => ({
      name,
      engine: "synthetic" as const,
      contextLength: 1 << 20,
      loaded: true,
    }));
  }
  async load(model: string): Promise<ModelInfo> {
    const info = (await this.listModels()).find((m) => m.name === model);
    if (!info) throw new EngineError("MODEL_NOT_FOUND", `no model named "${model}"`);
    return info;
  }
  async unload(): Promise<void> {}
  async close(): Promise<void> {}

  generate(request: GenerationRequest, signal: AbortSignal): Generation {
    const total = request.params.maxTokens;
    const token = this.options.token ?? SYNTHETIC_TOKEN;
    const model = this.models.get(request.model);
    const rate = model?.tokensPerSecond ?? 0;
    let settle!: (r: GenerationResult) => void;
    const result = new Promise<GenerationResult>((r) => {
      settle = r;
    });
    async function* run(): AsyncGenerator<GenerationPiece> {
      const started = performance.now();
      let produced = 0;
      try {
        if (!model) throw new EngineError("MODEL_NOT_FOUND", `no model named "${request.model}"`);
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
