// What the e2e agents must answer, computed in the test process: the agents' own llama.cpp engine
// on the same demo model file, greedy. With temperature 0 the demo model is deterministic, so a test
// compares the gateway's text and token counts exactly instead of checking for "some string".
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";
import type { ChatMessage, FinishReason } from "../../schema/protocol.ts";

/** One request as the agent's engine gets it (always greedy: temperature 0). */
export type ReferenceRequest = ({ prompt: string } | { messages: ChatMessage[] }) & {
  maxTokens: number;
  stop?: string[];
};

export interface ReferenceAnswer {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

const MODEL = "reference";

export class ReferenceEngine {
  private readonly answers = new Map<string, Promise<ReferenceAnswer>>();

  private constructor(private readonly engine: LlamaCppEngine) {}

  /**
   * `modelPath` is the file the agents serve (demoModelSpec(stack.cacheDir).path, or the
   * long-context copy). The engine is built as node-agent/main.ts builds it, with its defaults for
   * capacity, threads and context size; node-llama-cpp's Llama is shared per process (see the engine).
   */
  static async start(modelPath: string): Promise<ReferenceEngine> {
    const engine = new LlamaCppEngine({ models: [{ name: MODEL, path: modelPath }] });
    await engine.load(MODEL);
    return new ReferenceEngine(engine);
  }

  /** The greedy answer to `request`; each distinct request is generated once. */
  answer(request: ReferenceRequest): Promise<ReferenceAnswer> {
    const key = JSON.stringify(request);
    let answer = this.answers.get(key);
    if (!answer) {
      answer = this.generate(request);
      this.answers.set(key, answer);
      answer.catch(() => this.answers.delete(key));
    }
    return answer;
  }

  /**
   * The first `length` characters of the greedy answer: what a stream cut off after `length`
   * characters must have carried. Every token of the demo model decodes to at least one character
   * (its output layer vetoes control tokens and bytes that are not printable ASCII), so `length`
   * tokens always cover `length` characters; a shorter result fails the comparison, never passes it.
   */
  async prefix(request: ReferenceRequest, length: number): Promise<string> {
    const maxTokens = Math.max(1, Math.min(request.maxTokens, length));
    return (await this.answer({ ...request, maxTokens })).text.slice(0, length);
  }

  async close(): Promise<void> {
    await this.engine.close();
  }

  private async generate(request: ReferenceRequest): Promise<ReferenceAnswer> {
    const { maxTokens, stop, ...input } = request;
    const generation = this.engine.generate(
      { model: MODEL, ...input, params: { maxTokens, temperature: 0, ...(stop ? { stop } : {}) } },
      new AbortController().signal,
    );
    let text = "";
    for await (const piece of generation) text += piece.text;
    const { finishReason, usage } = await generation.result;
    return { text, finishReason, ...usage };
  }
}
