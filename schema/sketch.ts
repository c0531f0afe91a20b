// A DDSketch as JSON: what hubs store and send for latency and TTFT, and what
// GET /performance/report's minute series carries. The sketch itself (add, merge, quantiles) is
// gateway/experiments/stats/ddsketch.ts; this is only its wire shape, so schema/ can name it.
import { z } from "zod";

/** With α = 1%, 512 buckets span a factor of e^10 (e.g. 10 ms to 220 s) before any collapse. */
export const SKETCH_MAX_BUCKETS = 512;

export const DDSketchJson = z
  .object({
    relativeAccuracy: z
      .number()
      .positive()
      .lt(1)
      .describe("α: every quantile read from the sketch is within this fraction of a true value."),
    zeroCount: z.number().int().nonnegative().describe("Values <= 0 (a 0 ms latency)."),
    collapsedBelow: z
      .number()
      .int()
      .nullable()
      .describe("Bucket indexes below this have been collapsed into it (null: nothing collapsed yet)."),
    indexes: z
      .array(z.number().int())
      .max(SKETCH_MAX_BUCKETS)
      .describe(
        "Non-empty buckets, ascending: bucket i holds values in (γ^(i−1), γ^i], γ = (1+α)/(1−α), read as 2γ^i/(γ+1).",
      ),
    counts: z
      .array(z.number().int().positive())
      .max(SKETCH_MAX_BUCKETS)
      .describe("Values in each bucket of `indexes`, in the same order."),
  })
  .describe("A DDSketch (Masson, Rim & Lee, VLDB 2019): quantiles within α, mergeable bucket by bucket.");
export type DDSketchJson = z.infer<typeof DDSketchJson>;
