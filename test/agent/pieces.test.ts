// streamGeneration, the Generation every engine returns: pieces in order, one failure reported by
// both the iterator and `result`, and a consumer that stops early halting the run.
import { describe, expect, it } from "vitest";
import { EngineError, type GenerationPiece } from "../../node-agent/engines/engine.ts";
import { streamGeneration } from "../../node-agent/engines/pieces.ts";

const asEngineError = (err: unknown) =>
  err instanceof EngineError ? err : new EngineError("ENGINE_ERROR", "wrapped", true, { cause: err });

describe("streamGeneration", () => {
  it("yields the pieces in order and resolves result with the run's result", async () => {
    const generation = streamGeneration(async (emit) => {
      emit({ text: "a", tokens: 1 });
      await new Promise((resolve) => setTimeout(resolve, 5));
      emit({ text: "b", tokens: 2 });
      return { finishReason: "stop", usage: { promptTokens: 4, completionTokens: 3 } };
    }, asEngineError);
    const pieces: GenerationPiece[] = [];
    for await (const piece of generation) pieces.push(piece);
    expect(pieces).toEqual([
      { text: "a", tokens: 1 },
      { text: "b", tokens: 2 },
    ]);
    expect(await generation.result).toEqual({
      finishReason: "stop",
      usage: { promptTokens: 4, completionTokens: 3 },
    });
  });

  it("ends with the pieces already emitted, then throws the same EngineError that result rejects with", async () => {
    const generation = streamGeneration(async (emit) => {
      emit({ text: "partial", tokens: 1 });
      throw new TypeError("native failure");
    }, asEngineError);
    const pieces: GenerationPiece[] = [];
    let thrown: unknown;
    try {
      for await (const piece of generation) pieces.push(piece);
    } catch (err) {
      thrown = err;
    }
    expect(pieces).toEqual([{ text: "partial", tokens: 1 }]);
    expect(thrown).toMatchObject({ name: "EngineError", code: "ENGINE_ERROR", message: "wrapped" });
    await expect(generation.result).rejects.toBe(thrown);
  });

  it("halts the run when the consumer stops iterating early", async () => {
    let halted: AbortSignal | undefined;
    const generation = streamGeneration(async (emit, halt) => {
      halted = halt.signal;
      emit({ text: "first", tokens: 1 });
      await new Promise((resolve) => halt.signal.addEventListener("abort", resolve, { once: true }));
      return { finishReason: "cancelled", usage: { promptTokens: 1, completionTokens: 1 } };
    }, asEngineError);
    for await (const _piece of generation) break;
    expect(halted?.aborted).toBe(true);
    expect((await generation.result).finishReason).toBe("cancelled");
  });
});
