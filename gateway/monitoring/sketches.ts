// The latency and TTFT sketches hubs report (DDSketchJson, typed `unknown` in PoolMonitoring), read
// and merged without ever throwing: a malformed one is counted and left out, never fatal to a report.
import { DDSketch, DDSketchJson } from "../experiments/stats/ddsketch.ts";

export interface MergedSketch {
  /** null when no sketch held a value. */
  sketch: DDSketch | null;
  /** Sketches left out: not DDSketchJson, inconsistent, or of another accuracy than the first. */
  malformed: number;
}

/** A sketch from its JSON; null for none (null/undefined), "malformed" for anything unreadable. */
export function readSketch(json: unknown): DDSketch | null | "malformed" {
  if (json === null || json === undefined) return null;
  const parsed = DDSketchJson.safeParse(json);
  if (!parsed.success) return "malformed";
  try {
    return DDSketch.fromJSON(parsed.data);
  } catch {
    return "malformed";
  }
}

/** A running merge of sketches, each added as JSON. */
export class SketchSum {
  #sketch: DDSketch | null = null;

  /** Adds one sketch; false when it was malformed (or of another accuracy) and left out. */
  add(json: unknown): boolean {
    const sketch = readSketch(json);
    if (sketch === null) return true;
    if (sketch === "malformed") return false;
    if (this.#sketch === null) {
      this.#sketch = sketch;
      return true;
    }
    try {
      this.#sketch.merge(sketch);
      return true;
    } catch {
      return false;
    }
  }

  /** null when no sketch added held a value. */
  get sketch(): DDSketch | null {
    return this.#sketch !== null && this.#sketch.count > 0 ? this.#sketch : null;
  }
}

export function mergeSketches(jsons: Iterable<unknown>): MergedSketch {
  const sum = new SketchSum();
  let malformed = 0;
  for (const json of jsons) if (!sum.add(json)) malformed += 1;
  return { sketch: sum.sketch, malformed };
}

/** The value at quantile q, or null for no sketch or an empty one. */
export function quantileOf(sketch: DDSketch | null, q: number): number | null {
  if (sketch === null || sketch.count === 0) return null;
  const value = sketch.quantile(q);
  return Number.isFinite(value) ? value : null;
}
