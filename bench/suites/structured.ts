// What llama.cpp's grammar enforcement costs: tokens/s of the demo model through LlamaCppEngine with a
// `format` (JSON Schemas whose answers are long enough to time) against the same engine, model,
// prompt and seed unconstrained, generating as many tokens as the constrained answer took (tokens
// late in a context cost more, so equal lengths are compared). Each repetition runs every pair,
// constrained and unconstrained in alternating order (ABBA); ratios are paired. Decode tokens/s
// counts from the first piece to the last, so prompt processing (the same for both) does not dilute
// the grammar's per-token cost; the grammar's one-time build (schema -> GBNF -> llama.cpp's parse,
// then cached per schema and budget) is its own column.
// Standalone: `npx tsx bench/suites/structured.ts [--reps N]`.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { getLlama } from "node-llama-cpp";
import { DEMO_MODEL_NAME, ensureDemoModel } from "../../node-agent/demo-model.ts";
import type { GenerationRequest } from "../../node-agent/engines/engine.ts";
import { LlamaCppEngine } from "../../node-agent/engines/llamacpp/index.ts";
import { jsonGrammar } from "../../node-agent/engines/llamacpp/json-grammar.ts";
import { type Spread, spread } from "../lib/stats.ts";
import { cell, type TargetCheck, table } from "../lib/table.ts";

export const STRUCTURED_PROMPT = "Answer with JSON:";
export const STRUCTURED_MAX_TOKENS = 512;

type Format = NonNullable<GenerationRequest["format"]>;

const person = {
  type: "object",
  properties: { name: { type: "string", maxLength: 12 }, age: { type: "integer", minimum: 0, maximum: 120 } },
  required: ["name", "age"],
};

/** The constrained cases: the same request but for its format, each answer a few hundred tokens. */
const CASES: { name: string; format: Format }[] = [
  {
    name: "10 strings of 20 characters",
    format: {
      type: "array",
      items: { type: "string", minLength: 20, maxLength: 20 },
      minItems: 10,
      maxItems: 10,
    },
  },
  {
    name: "96 integers in 0..999",
    format: {
      type: "array",
      items: { type: "integer", minimum: 0, maximum: 999 },
      minItems: 96,
      maxItems: 96,
    },
  },
  { name: "12 objects {name, age}", format: { type: "array", items: person, minItems: 12, maxItems: 12 } },
];

export interface StructuredRow {
  case: string;
  /** Tokens after the first piece over the time from the first piece to the last, with the grammar. */
  grammarTokensPerSecond: Spread;
  /** The same unconstrained, for as many tokens. */
  unconstrainedTokensPerSecond: Spread;
  /** grammarTokensPerSecond ÷ unconstrainedTokensPerSecond in the same repetition, %. */
  percentOfUnconstrained: Spread;
  /** Completion tokens of each constrained answer. */
  tokens: number[];
  /** Building the grammar once: the schema to GBNF here, and llama.cpp parsing it. */
  grammarBuildMs: number;
}

export interface StructuredResult {
  model: string;
  rows: StructuredRow[];
  checks: TargetCheck[];
  text: string;
}

interface Sample {
  tokens: number;
  decodeTps: number;
}

export async function runStructured(options: { reps?: number } = {}): Promise<StructuredResult> {
  const reps = Math.max(2, options.reps ?? 6);
  const dir = await mkdtemp(join(tmpdir(), "orchard-bench-structured-"));
  const engine = new LlamaCppEngine({
    models: [{ name: DEMO_MODEL_NAME, path: await ensureDemoModel(dir) }],
    capacity: 1,
    threads: 1,
    contextSize: 1024,
  });
  const once = async (format: Format | undefined, seed: number, maxTokens: number): Promise<Sample> => {
    const generation = engine.generate(
      {
        model: DEMO_MODEL_NAME,
        prompt: STRUCTURED_PROMPT,
        params: { maxTokens, temperature: 1, seed },
        ...(format === undefined ? {} : { format }),
      },
      new AbortController().signal,
    );
    let first: { at: number; tokens: number } | undefined;
    let last = 0;
    for await (const piece of generation) {
      last = performance.now();
      first ??= { at: last, tokens: piece.tokens };
    }
    const tokens = (await generation.result).usage.completionTokens;
    const decoded = tokens - (first?.tokens ?? 0);
    return {
      tokens,
      decodeTps: first && last > first.at ? (decoded * 1000) / (last - first.at) : Number.NaN,
    };
  };
  try {
    const grammarBuildMs = await buildTimes();
    // One untimed pass each: model pages, the context and the grammar cache warm.
    const lengths: number[] = [];
    for (const c of CASES) lengths.push((await once(c.format, 1, STRUCTURED_MAX_TOKENS)).tokens);
    await once(undefined, 1, STRUCTURED_MAX_TOKENS);
    const pairs = CASES.map(() => [] as { grammar: Sample; free: Sample }[]);
    for (let rep = 0; rep < reps; rep++) {
      for (let k = 0; k < CASES.length; k++) {
        const i = (k + rep) % CASES.length;
        const c = CASES[i] as (typeof CASES)[number];
        const seed = 1000 + rep;
        let grammar: Sample;
        let free: Sample;
        if (rep % 2 === 0) {
          grammar = await once(c.format, seed, STRUCTURED_MAX_TOKENS);
          free = await once(undefined, seed, grammar.tokens);
        } else {
          // Unconstrained first, as long as this case's answers have been.
          free = await once(undefined, seed, lengths[i] as number);
          grammar = await once(c.format, seed, STRUCTURED_MAX_TOKENS);
        }
        lengths[i] = grammar.tokens;
        pairs[i]?.push({ grammar, free });
      }
    }
    const rows: StructuredRow[] = CASES.map((c, i) => {
      const own = pairs[i] ?? [];
      return {
        case: c.name,
        grammarTokensPerSecond: spread(own.map((p) => p.grammar.decodeTps)),
        unconstrainedTokensPerSecond: spread(own.map((p) => p.free.decodeTps)),
        percentOfUnconstrained: spread(own.map((p) => (p.grammar.decodeTps / p.free.decodeTps) * 100)),
        tokens: own.map((p) => p.grammar.tokens),
        grammarBuildMs: grammarBuildMs[i] as number,
      };
    });
    const checks: TargetCheck[] = [
      {
        target: "every answer under a grammar is ended by the grammar, inside max_tokens",
        measured: `${rows.map((r) => Math.max(...r.tokens)).join(" / ")} < ${STRUCTURED_MAX_TOKENS} tokens`,
        pass: rows.every((r) => Math.max(...r.tokens) < STRUCTURED_MAX_TOKENS),
      },
    ];
    const text = table(
      [
        `${DEMO_MODEL_NAME}, temperature 1, 1 thread, ${reps} reps`,
        "with grammar tok/s",
        "unconstrained tok/s",
        "% of unconstrained (paired)",
        "tokens",
        "grammar build ms",
      ],
      rows.map((r) => [
        r.case,
        cell(r.grammarTokensPerSecond, 0),
        cell(r.unconstrainedTokensPerSecond, 0),
        cell(r.percentOfUnconstrained, 1),
        `${Math.min(...r.tokens)}–${Math.max(...r.tokens)}`,
        r.grammarBuildMs.toFixed(1),
      ]),
    );
    return { model: DEMO_MODEL_NAME, rows, checks, text };
  } finally {
    await engine.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Each case's grammar built once outside the engine's cache: the GBNF text, then llama.cpp's parse. */
async function buildTimes(): Promise<number[]> {
  const llama = await getLlama({ gpu: false, build: "never" });
  const out: number[] = [];
  for (const c of CASES) {
    const t0 = performance.now();
    await llama.createGrammar({ grammar: jsonGrammar(c.format, { maxBytes: STRUCTURED_MAX_TOKENS }) });
    out.push(performance.now() - t0);
  }
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf("--reps");
  const result = await runStructured(at > 0 ? { reps: Number(process.argv[at + 1]) } : {});
  process.stdout.write(`${result.text}\n`);
  process.exit(0);
}
