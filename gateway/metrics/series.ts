// Labelled counters and fixed-bucket histograms with a bound on their series, the way a hub keeps
// the pool's Prometheus families: keyed by the label values in the family's order, serializable
// to Durable Object storage and back, and turned into MetricFamily samples for /metrics.
import {
  type HistogramSample,
  METRICS,
  type MetricFamily,
  type MetricName,
  OTHER_LABEL,
  type Sample,
} from "../../schema/monitoring.ts";

/** Series one family holds per pool; past it, new label sets are counted under OTHER_LABEL values. */
export const MAX_SERIES_PER_FAMILY = 4096;

const SEPARATOR = "\u0000";

function keyOf(values: readonly string[]): string {
  return values.join(SEPARATOR);
}

function labelsOf(names: readonly string[], key: string): Record<string, string> {
  const values = key.split(SEPARATOR);
  const labels: Record<string, string> = {};
  names.forEach((name, i) => {
    labels[name] = values[i] ?? "";
  });
  return labels;
}

/** The family's labels without `pool`: the hub adds its pool when it reports. */
function ownLabels(name: MetricName): readonly string[] {
  return METRICS[name].labels.filter((l) => l !== "pool");
}

/** Label values past the bound: every value but the first (usually the model) becomes OTHER_LABEL. */
function overflowKey(values: readonly string[]): string {
  return keyOf(values.map(() => OTHER_LABEL));
}

export class CounterFamily {
  readonly #values = new Map<string, number>();
  readonly #labels: readonly string[];

  constructor(readonly name: MetricName) {
    this.#labels = ownLabels(name);
  }

  /** `values` in the family's label order, without pool. */
  add(values: readonly string[], by = 1): void {
    let key = keyOf(values);
    if (!this.#values.has(key) && this.#values.size >= MAX_SERIES_PER_FAMILY) key = overflowKey(values);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }

  get(values: readonly string[]): number {
    return this.#values.get(keyOf(values)) ?? 0;
  }

  family(pool: string): MetricFamily {
    const samples: Sample[] = [];
    for (const [key, value] of this.#values) {
      samples.push({ labels: { pool, ...labelsOf(this.#labels, key) }, value });
    }
    return { name: this.name, type: "counter", samples };
  }

  toJSON(): [string, number][] {
    return [...this.#values];
  }

  /** Adds stored counts (a restore onto what was counted since the wake). */
  restore(stored: unknown): void {
    if (!Array.isArray(stored)) return;
    for (const entry of stored) {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number") continue;
      if (!Number.isFinite(entry[1]) || entry[1] < 0) continue;
      this.#values.set(entry[0], (this.#values.get(entry[0]) ?? 0) + entry[1]);
    }
  }
}

interface HistogramState {
  /** Per bucket (not cumulative), then the +Inf overflow. */
  counts: number[];
  sum: number;
}

export class HistogramFamily {
  readonly #series = new Map<string, HistogramState>();
  readonly #labels: readonly string[];
  readonly #bounds: readonly number[];

  constructor(readonly name: MetricName) {
    this.#labels = ownLabels(name);
    const spec = METRICS[name] as { buckets?: readonly number[] };
    if (spec.buckets === undefined) throw new Error(`${name} is not a histogram`);
    this.#bounds = spec.buckets;
  }

  observe(values: readonly string[], value: number): void {
    if (!Number.isFinite(value)) return;
    let key = keyOf(values);
    let state = this.#series.get(key);
    if (state === undefined) {
      if (this.#series.size >= MAX_SERIES_PER_FAMILY) key = overflowKey(values);
      state = this.#series.get(key);
      if (state === undefined) {
        state = { counts: new Array<number>(this.#bounds.length + 1).fill(0), sum: 0 };
        this.#series.set(key, state);
      }
    }
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    state.counts[i] = (state.counts[i] ?? 0) + 1;
    state.sum += value;
  }

  family(pool: string): MetricFamily {
    const samples: HistogramSample[] = [];
    for (const [key, state] of this.#series) {
      let running = 0;
      const buckets = state.counts.map((c) => {
        running += c;
        return running;
      });
      samples.push({
        labels: { pool, ...labelsOf(this.#labels, key) },
        buckets,
        sum: state.sum,
        count: running,
      });
    }
    return { name: this.name, type: "histogram", samples };
  }

  toJSON(): [string, number[], number][] {
    return [...this.#series].map(([key, s]) => [key, s.counts, s.sum]);
  }

  restore(stored: unknown): void {
    if (!Array.isArray(stored)) return;
    const width = this.#bounds.length + 1;
    for (const entry of stored) {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[2] !== "number") continue;
      const counts = entry[1];
      if (!Array.isArray(counts) || counts.length !== width) continue;
      if (!counts.every((c) => typeof c === "number" && Number.isInteger(c) && c >= 0)) continue;
      const state = this.#series.get(entry[0]) ?? { counts: new Array<number>(width).fill(0), sum: 0 };
      state.counts = state.counts.map((c, i) => c + (counts[i] as number));
      state.sum += entry[2];
      this.#series.set(entry[0], state);
    }
  }
}
