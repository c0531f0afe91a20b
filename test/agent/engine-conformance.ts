// The engine conformance suite: the same cases against any Engine, so every engine keeps the one
// contract the agent relies on — pieces stream before the end, stop sequences cut the text before
// them, max tokens is a hard limit, an abort ends the generation promptly as "cancelled", usage
// counts what was streamed, and failures carry stable codes. Call engineConformance() inside a
// test file with a factory; each engine's own file adds what only it does.
import { afterAll, beforeAll, describe, expect, it, type TestContext } from "vitest";
import {
  type Engine,
  EngineError,
  type Generation,
  type GenerationPiece,
  type GenerationRequest,
} from "../../node-agent/engines/engine.ts";
import type { EngineName } from "../../schema/protocol.ts";

export interface ConformanceTarget {
  /** Shown in the suite's name. */
  label: string;
  engine: EngineName;
  /** Builds the engine under test, serving `model`; closed after the suite. */
  create: () => Promise<Engine>;
  /** A model the engine serves that generates at least 24 tokens for `prompt` at temperature 0. */
  model: string;
  prompt: string;
  /** Set when the engine cannot run here: every case is skipped with this reason, never passed. */
  skip?: string;
  /**
   * Most tokens an aborted generation may still report beyond those streamed before the abort
   * (an engine that was mid-batch). Default 8.
   */
  abortSlack?: number;
}

interface Collected {
  pieces: GenerationPiece[];
  text: string;
  finishReason: string;
  promptTokens: number;
  completionTokens: number;
}

async function collect(generation: Generation): Promise<Collected> {
  const pieces: GenerationPiece[] = [];
  for await (const piece of generation) pieces.push(piece);
  const { finishReason, usage } = await generation.result;
  return { pieces, text: pieces.map((p) => p.text).join(""), finishReason, ...usage };
}

const tokensOf = (pieces: GenerationPiece[]) => pieces.reduce((n, p) => n + p.tokens, 0);

async function failure(generation: Generation): Promise<{ iterated: unknown; result: unknown }> {
  let iterated: unknown;
  try {
    for await (const _ of generation) {
    }
  } catch (err) {
    iterated = err;
  }
  const result = await generation.result.then(
    () => undefined,
    (err: unknown) => err,
  );
  return { iterated, result };
}

export function engineConformance(target: ConformanceTarget): void {
  describe(`engine conformance: ${target.label}`, () => {
    let engine: Engine;
    const request = (
      over: Omit<Partial<GenerationRequest>, "params"> & {
        params?: Partial<GenerationRequest["params"]>;
      } = {},
    ): GenerationRequest => {
      const { params, ...rest } = over;
      return {
        model: target.model,
        ...(rest.messages ? {} : { prompt: target.prompt }),
        ...rest,
        params: { maxTokens: 24, temperature: 0, ...params },
      } as GenerationRequest;
    };
    const run = (over?: Parameters<typeof request>[0]) =>
      collect(engine.generate(request(over), new AbortController().signal));
    const skipped = (ctx: TestContext) => {
      if (target.skip) ctx.skip(target.skip);
    };

    beforeAll(async () => {
      if (!target.skip) engine = await target.create();
    });
    afterAll(async () => {
      await engine?.close();
    });

    it("lists the model under its engine", async (ctx) => {
      skipped(ctx);
      const models = await engine.listModels();
      expect(models.find((m) => m.name === target.model)).toMatchObject({ engine: target.engine });
      expect(engine.name).toBe(target.engine);
    });

    it("streams pieces before the generation ends, and counts them in usage", async (ctx) => {
      skipped(ctx);
      const generation = engine.generate(request(), new AbortController().signal);
      let settled = false;
      void generation.result.finally(() => {
        settled = true;
      });
      const pieces: GenerationPiece[] = [];
      let settledAtFirstPiece: boolean | undefined;
      for await (const piece of generation) {
        settledAtFirstPiece ??= settled;
        pieces.push(piece);
      }
      const { usage, finishReason } = await generation.result;
      expect(pieces.length).toBeGreaterThan(1);
      expect(settledAtFirstPiece).toBe(false);
      expect(["stop", "length"]).toContain(finishReason);
      expect(usage.promptTokens).toBeGreaterThan(0);
      expect(usage.completionTokens).toBeGreaterThan(0);
      // The agent counts what it streamed when an engine cannot say more (after an abort): the
      // pieces carry every token usage reports.
      expect(tokensOf(pieces)).toBe(usage.completionTokens);
      expect(pieces.every((p) => p.tokens >= 0 && Number.isInteger(p.tokens))).toBe(true);
    });

    it("is deterministic at temperature 0, for a prompt and for chat messages", async (ctx) => {
      skipped(ctx);
      const [a, b] = [await run(), await run()];
      expect(a.text).not.toBe("");
      expect(b.text).toBe(a.text);
      const messages = [{ role: "user" as const, content: target.prompt }];
      const [c, d] = [await run({ messages }), await run({ messages })];
      expect(c.completionTokens).toBeGreaterThan(0);
      expect(d.text).toBe(c.text);
      expect(tokensOf(c.pieces)).toBe(c.completionTokens);
    });

    it("never generates more than max tokens, and says length when it stops there", async (ctx) => {
      skipped(ctx);
      for (const maxTokens of [1, 5]) {
        const out = await run({ params: { maxTokens } });
        expect(out.completionTokens).toBeLessThanOrEqual(maxTokens);
        expect(tokensOf(out.pieces)).toBe(out.completionTokens);
        if (out.finishReason === "length") expect(out.completionTokens).toBe(maxTokens);
      }
      const long = await run({ params: { maxTokens: 12 } });
      expect(long).toMatchObject({ finishReason: "length", completionTokens: 12 });
    });

    it("ends at a stop sequence, cutting the text before it", async (ctx) => {
      skipped(ctx);
      const full = await run();
      // A stop taken from the output itself, a few characters in, so every engine meets it.
      const at = Math.max(1, Math.floor(full.text.length / 3));
      const stop = full.text.slice(at, at + 3);
      expect(
        stop.trim().length,
        `output too short for a stop test: ${JSON.stringify(full.text)}`,
      ).toBeGreaterThan(0);
      const cut = await run({ params: { stop: [stop] } });
      expect(cut.finishReason).toBe("stop");
      expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
      expect(cut.text).not.toContain(stop);
      expect(cut.completionTokens).toBeLessThan(full.completionTokens);
      expect(cut.completionTokens).toBeGreaterThanOrEqual(tokensOf(cut.pieces));
    });

    it("ends promptly as cancelled when aborted mid-stream, and before it starts", async (ctx) => {
      skipped(ctx);
      const controller = new AbortController();
      const generation = engine.generate(request({ params: { maxTokens: 4000 } }), controller.signal);
      const pieces: GenerationPiece[] = [];
      let abortedAt = 0;
      for await (const piece of generation) {
        pieces.push(piece);
        if (pieces.length === 2) {
          controller.abort();
          abortedAt = performance.now();
        }
      }
      const { finishReason, usage } = await generation.result;
      expect(finishReason).toBe("cancelled");
      expect(performance.now() - abortedAt).toBeLessThan(2_000);
      expect(pieces.length).toBeLessThan(2 + (target.abortSlack ?? 8));
      expect(usage.completionTokens).toBeLessThan(4000);
      expect(usage.completionTokens).toBeGreaterThanOrEqual(tokensOf(pieces.slice(0, 2)));

      const early = new AbortController();
      early.abort();
      const never = await collect(engine.generate(request(), early.signal));
      expect(never.finishReason).toBe("cancelled");
      expect(never.text).toBe("");

      // The engine still serves afterwards.
      expect((await run({ params: { maxTokens: 3 } })).completionTokens).toBeGreaterThan(0);
    });

    it("stops generating when the consumer stops iterating", async (ctx) => {
      skipped(ctx);
      const generation = engine.generate(
        request({ params: { maxTokens: 4000 } }),
        new AbortController().signal,
      );
      for await (const _ of generation) break;
      const { finishReason, usage } = await generation.result;
      expect(finishReason).toBe("cancelled");
      expect(usage.completionTokens).toBeLessThan(4000);
    });

    it("fails an unknown model with MODEL_NOT_FOUND and a bad request with INVALID_REQUEST", async (ctx) => {
      skipped(ctx);
      const unknown = await failure(
        engine.generate(request({ model: "no-such-model-anywhere" }), new AbortController().signal),
      );
      expect(unknown.iterated).toBeInstanceOf(EngineError);
      expect(unknown.result).toBe(unknown.iterated);
      expect(unknown.iterated).toMatchObject({ code: "MODEL_NOT_FOUND" });
      const both = await failure(
        engine.generate(
          { ...request(), messages: [{ role: "user", content: "hi" }] },
          new AbortController().signal,
        ),
      );
      expect(both.result).toMatchObject({ code: "INVALID_REQUEST" });
      const badParams = await failure(
        engine.generate(request({ params: { maxTokens: 0 } }), new AbortController().signal),
      );
      expect(badParams.result).toMatchObject({ code: "INVALID_REQUEST" });
      // Still serving.
      expect((await run({ params: { maxTokens: 2 } })).completionTokens).toBeGreaterThan(0);
    });
  });
}
