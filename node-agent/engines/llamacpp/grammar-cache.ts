// The grammars llama.cpp enforces a request's `format` with: built from the schema and the tokens the
// request may produce (json-grammar.ts), compiled once per (schema, budget) and kept in a bounded LRU,
// so a schema used again costs a map lookup and a fresh evaluation state.
import { type Llama, type LlamaGrammar, LlamaGrammarEvaluationState, type LlamaModel } from "node-llama-cpp";
import { EngineError, type GenerationRequest } from "../engine.ts";
import { jsonGrammar, quantize, SchemaGrammarError } from "./json-grammar.ts";

/** Compiled grammars kept per engine. A schema is at most 32 KiB; its grammar a few times that. */
export const GRAMMAR_CACHE_ENTRIES = 64;

type Format = NonNullable<GenerationRequest["format"]>;

export class GrammarCache {
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();

  constructor(private readonly capacity = GRAMMAR_CACHE_ENTRIES) {}

  get size(): number {
    return this.grammars.size;
  }

  /**
   * A new evaluation state for `format` on `model`, for a generation of at most `maxTokens` tokens.
   * A schema the grammar cannot be built for is INVALID_REQUEST, never a crash.
   */
  async stateFor(model: LlamaModel, format: Format, maxTokens: number): Promise<LlamaGrammarEvaluationState> {
    // Budgets are quantized down as the grammar's own rules are: fewer entries, never a larger bound.
    const budget = quantize(Math.max(1, maxTokens));
    const key = `${budget}\n${JSON.stringify(format)}`;
    let grammar = this.grammars.get(key);
    if (grammar) {
      this.grammars.delete(key); // the most recently used goes last
    } else {
      grammar = compile(model.llama, format, budget);
      // A grammar that failed is not kept: the next request gets the same error afresh.
      grammar.catch(() => {
        if (this.grammars.get(key) === grammar) this.grammars.delete(key);
      });
      if (this.grammars.size >= this.capacity) {
        const oldest = this.grammars.keys().next().value;
        if (oldest !== undefined) this.grammars.delete(oldest);
      }
    }
    this.grammars.set(key, grammar);
    return new LlamaGrammarEvaluationState({ model, grammar: await grammar });
  }
}

async function compile(llama: Llama, format: Format, budget: number): Promise<LlamaGrammar> {
  let text: string;
  try {
    text = jsonGrammar(format, { maxBytes: budget });
  } catch (err) {
    const why =
      err instanceof SchemaGrammarError ? err.message : "the schema could not be turned into a grammar";
    throw new EngineError("INVALID_REQUEST", `format: ${why}`, false, { cause: err });
  }
  try {
    return await llama.createGrammar({ grammar: text });
  } catch (err) {
    throw new EngineError("INVALID_REQUEST", "format: llama.cpp refused the schema's grammar", false, {
      cause: err,
    });
  }
}
