// A pool's recent traffic for GET /performance/report, the alerts and the dashboard's charts: per
// model version and per agent, counts, errors by code, tokens and DDSketches of latency and time
// to first token, in 10-second buckets (the last 5 minutes), minutes (the last hour) and hours (the
// last day). A request is recorded once, in the open 10 s bucket; a closed bucket is folded into
// its minute and a closed minute into its hour, so every window is a sum of a few buckets and a
// report never reads raw requests. Closed minutes and hours are written to storage once each, the
// open buckets on the hub's flush cycle (hub-telemetry.ts).
import type { MinutePoint, ReportWindow, WindowAggregate } from "../../schema/monitoring.ts";
import { DDSketch, DDSketchJson } from "../experiments/stats/ddsketch.ts";

export const TEN_SECONDS = 10_000;
export const MINUTE = 60_000;
export const HOUR = 3_600_000;
const TEN_SECOND_BUCKETS = 30;
const MINUTE_BUCKETS = 60;
const HOUR_BUCKETS = 24;
/** Agents and models one bucket keeps apart; more are folded into OTHER_KEY. */
export const MAX_KEYS_PER_BUCKET = 256;
export const OTHER_KEY = "(other)";

export interface TrafficEvent {
  model: string;
  agent: string | null;
  ok: boolean;
  /** The stable error code of a failed request; null for success and for cancellations. */
  code: string | null;
  latencyMs: number;
  ttftMs: number | null;
  promptTokens: number;
  completionTokens: number;
  generationMs: number;
}

export class Aggregate {
  requests = 0;
  errors = 0;
  readonly errorsByCode = new Map<string, number>();
  promptTokens = 0;
  completionTokens = 0;
  generationMs = 0;
  latency = new DDSketch();
  ttft = new DDSketch();

  record(e: TrafficEvent): void {
    this.requests += 1;
    if (e.code !== null) {
      this.errors += 1;
      this.errorsByCode.set(e.code, (this.errorsByCode.get(e.code) ?? 0) + 1);
    }
    if (e.ok) {
      this.latency.add(e.latencyMs);
      if (e.ttftMs !== null) this.ttft.add(e.ttftMs);
      this.promptTokens += e.promptTokens;
      this.completionTokens += e.completionTokens;
      this.generationMs += e.generationMs;
    }
  }

  merge(other: Aggregate): void {
    this.requests += other.requests;
    this.errors += other.errors;
    for (const [code, n] of other.errorsByCode)
      this.errorsByCode.set(code, (this.errorsByCode.get(code) ?? 0) + n);
    this.promptTokens += other.promptTokens;
    this.completionTokens += other.completionTokens;
    this.generationMs += other.generationMs;
    this.latency.merge(other.latency);
    this.ttft.merge(other.ttft);
  }

  toJSON(): WindowAggregate {
    return {
      requests: this.requests,
      errors: this.errors,
      errorsByCode: Object.fromEntries(this.errorsByCode),
      promptTokens: this.promptTokens,
      completionTokens: this.completionTokens,
      generationMs: this.generationMs,
      latencyMs: this.latency.toJSON(),
      ttftMs: this.ttft.toJSON(),
    };
  }

  /** Null for anything that is not a stored aggregate. */
  static fromJSON(json: unknown): Aggregate | null {
    if (typeof json !== "object" || json === null) return null;
    const j = json as Record<string, unknown>;
    const numbers = ["requests", "errors", "promptTokens", "completionTokens", "generationMs"] as const;
    if (!numbers.every((k) => typeof j[k] === "number" && Number.isFinite(j[k]) && (j[k] as number) >= 0)) {
      return null;
    }
    const latency = DDSketchJson.safeParse(j.latencyMs);
    const ttft = DDSketchJson.safeParse(j.ttftMs);
    if (!latency.success || !ttft.success) return null;
    const a = new Aggregate();
    a.requests = j.requests as number;
    a.errors = j.errors as number;
    a.promptTokens = j.promptTokens as number;
    a.completionTokens = j.completionTokens as number;
    a.generationMs = j.generationMs as number;
    try {
      a.latency = DDSketch.fromJSON(latency.data);
      a.ttft = DDSketch.fromJSON(ttft.data);
    } catch {
      return null;
    }
    if (typeof j.errorsByCode === "object" && j.errorsByCode !== null) {
      for (const [code, n] of Object.entries(j.errorsByCode)) {
        if (typeof n === "number" && n > 0) a.errorsByCode.set(code, n);
      }
    }
    return a;
  }
}

export interface StoredBucket {
  start: number;
  byModel: Record<string, WindowAggregate>;
  byAgent: Record<string, WindowAggregate>;
}

export class Bucket {
  readonly byModel = new Map<string, Aggregate>();
  readonly byAgent = new Map<string, Aggregate>();

  constructor(readonly start: number) {}

  get empty(): boolean {
    return this.byModel.size === 0 && this.byAgent.size === 0;
  }

  record(e: TrafficEvent): void {
    entry(this.byModel, e.model).record(e);
    if (e.agent !== null) entry(this.byAgent, e.agent).record(e);
  }

  merge(other: Bucket): void {
    for (const [k, a] of other.byModel) entry(this.byModel, k).merge(a);
    for (const [k, a] of other.byAgent) entry(this.byAgent, k).merge(a);
  }

  /** Everything of the bucket in one aggregate (the dashboard's per-minute points). */
  total(): Aggregate {
    const all = new Aggregate();
    for (const a of this.byModel.values()) all.merge(a);
    return all;
  }

  toJSON(): StoredBucket {
    const out = (m: Map<string, Aggregate>) => Object.fromEntries([...m].map(([k, a]) => [k, a.toJSON()]));
    return { start: this.start, byModel: out(this.byModel), byAgent: out(this.byAgent) };
  }

  static fromJSON(json: unknown): Bucket | null {
    if (typeof json !== "object" || json === null) return null;
    const j = json as Record<string, unknown>;
    if (typeof j.start !== "number" || !Number.isFinite(j.start)) return null;
    const bucket = new Bucket(j.start);
    for (const [field, into] of [
      [j.byModel, bucket.byModel],
      [j.byAgent, bucket.byAgent],
    ] as const) {
      if (typeof field !== "object" || field === null) return null;
      for (const [k, v] of Object.entries(field)) {
        const a = Aggregate.fromJSON(v);
        if (a !== null) into.set(k, a);
      }
    }
    return bucket;
  }
}

function entry(map: Map<string, Aggregate>, key: string): Aggregate {
  let a = map.get(key);
  if (a === undefined) {
    const k = map.size >= MAX_KEYS_PER_BUCKET && !map.has(key) ? OTHER_KEY : key;
    a = map.get(k) ?? new Aggregate();
    map.set(k, a);
  }
  return a;
}

const floorTo = (t: number, step: number) => Math.floor(t / step) * step;

/** What changed since the last take(): closed minutes and hours to write once, and old ones to delete. */
export interface WindowWrites {
  minutes: Bucket[];
  hours: Bucket[];
  /** Starts of closed minutes and hours that left their ring. */
  expiredMinutes: number[];
  expiredHours: number[];
}

export interface OpenWindows {
  tenSeconds: StoredBucket[];
  open: StoredBucket;
  openMinute: StoredBucket;
  openHour: StoredBucket;
}

export class TrafficWindows {
  #tens: Bucket[] = [];
  #open: Bucket;
  #minute: Bucket;
  #minutes: Bucket[] = [];
  #hour: Bucket;
  #hours: Bucket[] = [];
  #writes: WindowWrites = { minutes: [], hours: [], expiredMinutes: [], expiredHours: [] };
  /** Something was recorded since the open buckets were last taken for storage. */
  dirty = false;

  constructor(now: number) {
    this.#open = new Bucket(floorTo(now, TEN_SECONDS));
    this.#minute = new Bucket(floorTo(now, MINUTE));
    this.#hour = new Bucket(floorTo(now, HOUR));
  }

  record(e: TrafficEvent, now: number): void {
    this.advance(now);
    this.#open.record(e);
    this.dirty = true;
  }

  /** Closes the buckets `now` has left. */
  advance(now: number): void {
    const ten = floorTo(now, TEN_SECONDS);
    if (ten <= this.#open.start) return;
    const closed = this.#open;
    this.#open = new Bucket(ten);
    if (!closed.empty) {
      this.#rollMinute(floorTo(closed.start, MINUTE));
      this.#minute.merge(closed);
      this.#tens.push(closed);
    }
    this.#rollMinute(floorTo(now, MINUTE));
    while (
      this.#tens.length > 0 &&
      (this.#tens[0] as Bucket).start < ten - TEN_SECOND_BUCKETS * TEN_SECONDS
    ) {
      this.#tens.shift();
    }
  }

  #rollMinute(minute: number): void {
    if (minute <= this.#minute.start) return;
    const closed = this.#minute;
    this.#minute = new Bucket(minute);
    if (!closed.empty) {
      this.#rollHour(floorTo(closed.start, HOUR));
      this.#hour.merge(closed);
      this.#minutes.push(closed);
      this.#writes.minutes.push(closed);
    }
    this.#rollHour(floorTo(minute, HOUR));
    while (
      this.#minutes.length > 0 &&
      (this.#minutes[0] as Bucket).start <= minute - MINUTE_BUCKETS * MINUTE
    ) {
      this.#writes.expiredMinutes.push((this.#minutes.shift() as Bucket).start);
    }
  }

  #rollHour(hour: number): void {
    if (hour <= this.#hour.start) return;
    const closed = this.#hour;
    this.#hour = new Bucket(hour);
    if (!closed.empty) {
      this.#hours.push(closed);
      this.#writes.hours.push(closed);
    }
    while (this.#hours.length > 0 && (this.#hours[0] as Bucket).start <= hour - HOUR_BUCKETS * HOUR) {
      this.#writes.expiredHours.push((this.#hours.shift() as Bucket).start);
    }
  }

  /**
   * The buckets that make up `window` at `now`: those that started within it, so a window covers
   * between its length less one bucket and its length (1m: 50-60 s; 1h: 59-60 min).
   */
  #parts(window: ReportWindow, now: number): Bucket[] {
    this.advance(now);
    switch (window) {
      case "1m":
        return [...this.#tens.slice(-6), this.#open].filter((b) => b.start > now - MINUTE);
      case "5m":
        return [...this.#tens, this.#open].filter((b) => b.start > now - 5 * MINUTE);
      case "1h":
        return [...this.#minutes.filter((b) => b.start > now - HOUR), this.#minute, this.#open];
      case "24h":
        return [
          ...this.#hours.filter((b) => b.start > now - 24 * HOUR),
          this.#hour,
          this.#minute,
          this.#open,
        ];
    }
  }

  window(window: ReportWindow, now: number): Bucket {
    const sum = new Bucket(now);
    for (const part of this.#parts(window, now)) sum.merge(part);
    return sum;
  }

  /** 10 s totals of the last `ms`, oldest first, the open bucket last. */
  recent(ms: number, now: number): { t: number; requests: number; errors: number }[] {
    this.advance(now);
    return [...this.#tens, this.#open]
      .filter((b) => b.start > now - ms)
      .map((b) => {
        let requests = 0;
        let errors = 0;
        for (const a of b.byModel.values()) {
          requests += a.requests;
          errors += a.errors;
        }
        return { t: b.start, requests, errors };
      });
  }

  /** One point per minute of the last hour that saw traffic, oldest first (the current minute last). */
  series(now: number): MinutePoint[] {
    this.advance(now);
    const current = new Bucket(this.#minute.start);
    current.merge(this.#minute);
    current.merge(this.#open);
    return [...this.#minutes.filter((b) => b.start > now - HOUR), current]
      .filter((b) => !b.empty)
      .map((b) => {
        const all = b.total();
        return {
          t: b.start,
          requests: all.requests,
          errors: all.errors,
          completionTokens: all.completionTokens,
          generationMs: all.generationMs,
          latencyMs: all.latency.toJSON(),
        };
      });
  }

  /** Closed minutes and hours to write, and expired ones to delete, since the last call. */
  takeWrites(): WindowWrites {
    const writes = this.#writes;
    this.#writes = { minutes: [], hours: [], expiredMinutes: [], expiredHours: [] };
    return writes;
  }

  /** The open buckets and the 10 s ring, for storage on the flush cycle. */
  openState(): OpenWindows {
    this.dirty = false;
    return {
      tenSeconds: this.#tens.map((b) => b.toJSON()),
      open: this.#open.toJSON(),
      openMinute: this.#minute.toJSON(),
      openHour: this.#hour.toJSON(),
    };
  }

  /**
   * What storage holds, merged with what was recorded since the wake. The stored open buckets are
   * folded as the hub would have folded them had it stayed awake: a 10 s bucket into its minute, a
   * minute into its hour, each into the current one when it is the current one, else closed into
   * its ring. Buckets too old for `now` leave on the next advance(); malformed ones are skipped.
   */
  restore(stored: { open?: unknown; minutes: unknown[]; hours: unknown[] }, now: number): void {
    const parse = (list: unknown[]) => list.map(Bucket.fromJSON).filter((b): b is Bucket => b !== null);
    this.#minutes = mergeByStart(parse(stored.minutes), this.#minutes);
    this.#hours = mergeByStart(parse(stored.hours), this.#hours);
    const open = stored.open as Partial<Record<keyof OpenWindows, unknown>> | undefined;
    if (open !== undefined) {
      this.#tens = mergeByStart(Array.isArray(open.tenSeconds) ? parse(open.tenSeconds) : [], this.#tens);
      const ten = Bucket.fromJSON(open.open);
      const minute = Bucket.fromJSON(open.openMinute);
      const hour = Bucket.fromJSON(open.openHour);
      if (ten !== null && ten.start < this.#open.start) {
        this.#tens = mergeByStart([ten], this.#tens);
        if (minute !== null && floorTo(ten.start, MINUTE) === minute.start) minute.merge(ten);
      } else if (ten !== null) this.#open.merge(ten);
      if (minute !== null && minute.start < this.#minute.start) {
        this.#minutes = mergeByStart([minute], this.#minutes);
        this.#writes.minutes.push(minute);
        if (hour !== null && floorTo(minute.start, HOUR) === hour.start) hour.merge(minute);
      } else if (minute !== null) this.#minute.merge(minute);
      if (hour !== null && hour.start < this.#hour.start) {
        this.#hours = mergeByStart([hour], this.#hours);
        this.#writes.hours.push(hour);
      } else if (hour !== null) this.#hour.merge(hour);
    }
    this.dirty = true;
    this.advance(now);
  }
}

/** Buckets of both lists, those with the same start merged, oldest first. */
function mergeByStart(stored: Bucket[], current: Bucket[]): Bucket[] {
  const byStart = new Map<number, Bucket>();
  for (const b of [...stored, ...current]) {
    const existing = byStart.get(b.start);
    if (existing === undefined) byStart.set(b.start, b);
    else existing.merge(b);
  }
  return [...byStart.values()].sort((a, b) => a.start - b.start);
}
