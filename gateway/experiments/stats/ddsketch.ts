// A mergeable quantile sketch with relative accuracy: DDSketch (Masson, Rim & Lee, "DDSketch: A
// Fast and Fully-Mergeable Quantile Sketch with Relative-Error Guarantees", VLDB 2019). Values fall
// in logarithmic buckets ceil(log_γ x), γ = (1+α)/(1−α), so any quantile comes back within α of a
// true value. Buckets are sparse; past MAX_BUCKETS the lowest are collapsed into one, which costs
// accuracy only at the low quantiles (latency's interesting end is the high one).
import { type DDSketchJson, SKETCH_MAX_BUCKETS } from "../../../schema/sketch.ts";

// The wire shape lives in schema/ (GET /performance/report names it); re-exported for the gateway.
export { DDSketchJson, SKETCH_MAX_BUCKETS } from "../../../schema/sketch.ts";

/** The relative accuracy α: a reported quantile is within 1% of a value at that rank. */
export const SKETCH_RELATIVE_ACCURACY = 0.01;

export class DDSketch {
  readonly relativeAccuracy: number;
  readonly #gamma: number;
  readonly #logGamma: number;
  #buckets = new Map<number, number>();
  #zeroCount = 0;
  #count = 0;
  #collapsedBelow: number | null = null;

  constructor(relativeAccuracy = SKETCH_RELATIVE_ACCURACY) {
    this.relativeAccuracy = relativeAccuracy;
    this.#gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy);
    this.#logGamma = Math.log(this.#gamma);
  }

  static fromJSON(json: DDSketchJson): DDSketch {
    if (json.indexes.length !== json.counts.length)
      throw new Error("sketch indexes and counts differ in length");
    const sketch = new DDSketch(json.relativeAccuracy);
    sketch.#zeroCount = json.zeroCount;
    sketch.#count = json.zeroCount;
    sketch.#collapsedBelow = json.collapsedBelow;
    json.indexes.forEach((index, i) => {
      const count = json.counts[i] ?? 0;
      if (sketch.#buckets.has(index)) throw new Error(`sketch bucket ${index} appears twice`);
      if (json.collapsedBelow !== null && index < json.collapsedBelow) {
        throw new Error(`sketch bucket ${index} lies below the collapsed floor ${json.collapsedBelow}`);
      }
      sketch.#buckets.set(index, count);
      sketch.#count += count;
    });
    return sketch;
  }

  get count(): number {
    return this.#count;
  }

  get bucketCount(): number {
    return this.#buckets.size;
  }

  add(value: number): void {
    this.#count += 1;
    if (!(value > 0)) {
      this.#zeroCount += 1;
      return;
    }
    let index = Math.ceil(Math.log(value) / this.#logGamma);
    if (this.#collapsedBelow !== null && index < this.#collapsedBelow) index = this.#collapsedBelow;
    const had = this.#buckets.get(index);
    this.#buckets.set(index, (had ?? 0) + 1);
    if (had === undefined && this.#buckets.size > SKETCH_MAX_BUCKETS) this.#collapse();
  }

  merge(other: DDSketch): void {
    if (other.relativeAccuracy !== this.relativeAccuracy) {
      throw new Error(
        `cannot merge sketches of accuracy ${other.relativeAccuracy} and ${this.relativeAccuracy}`,
      );
    }
    this.#zeroCount += other.#zeroCount;
    this.#count += other.#count;
    const floor =
      this.#collapsedBelow === null
        ? other.#collapsedBelow
        : other.#collapsedBelow === null
          ? this.#collapsedBelow
          : Math.max(this.#collapsedBelow, other.#collapsedBelow);
    for (const [index, count] of other.#buckets)
      this.#buckets.set(index, (this.#buckets.get(index) ?? 0) + count);
    if (floor !== null) this.#collapseBelow(floor);
    if (this.#buckets.size > SKETCH_MAX_BUCKETS) this.#collapse();
  }

  /** The value at quantile q in [0, 1] (DDSketch's rank q·(n−1)); NaN when empty. */
  quantile(q: number): number {
    if (this.#count === 0 || !(q >= 0 && q <= 1)) return Number.NaN;
    const rank = q * (this.#count - 1);
    if (rank < this.#zeroCount) return 0;
    let seen = this.#zeroCount;
    const indexes = [...this.#buckets.keys()].sort((x, y) => x - y);
    for (const index of indexes) {
      seen += this.#buckets.get(index) ?? 0;
      if (seen > rank) return this.#value(index);
    }
    return this.#value(indexes[indexes.length - 1] ?? 0);
  }

  toJSON(): DDSketchJson {
    const indexes = [...this.#buckets.keys()].sort((x, y) => x - y);
    return {
      relativeAccuracy: this.relativeAccuracy,
      zeroCount: this.#zeroCount,
      collapsedBelow: this.#collapsedBelow,
      indexes,
      counts: indexes.map((index) => this.#buckets.get(index) ?? 0),
    };
  }

  /** The bucket's representative: within α of every value in (γ^(i−1), γ^i]. */
  #value(index: number): number {
    return (2 * this.#gamma ** index) / (this.#gamma + 1);
  }

  /** Folds the lowest buckets together until the count is back at the bound. */
  #collapse(): void {
    const indexes = [...this.#buckets.keys()].sort((x, y) => x - y);
    const floor = indexes[indexes.length - SKETCH_MAX_BUCKETS];
    if (floor !== undefined) this.#collapseBelow(floor);
  }

  #collapseBelow(floor: number): void {
    let moved = 0;
    for (const [index, count] of this.#buckets) {
      if (index < floor) {
        moved += count;
        this.#buckets.delete(index);
      }
    }
    if (moved > 0) this.#buckets.set(floor, (this.#buckets.get(floor) ?? 0) + moved);
    this.#collapsedBelow = this.#collapsedBelow === null ? floor : Math.max(this.#collapsedBelow, floor);
  }
}
