// The rate limiter's state and decisions, without I/O: per subject, requests and tokens per minute
// as draining buckets, and its open reservations (concurrency); the same per model where
// RATE_LIMITS gives a model limits. A request reserves at admission and settles when it ends, so
// concurrent admissions see each other's reservations and no budget is overshot by more than the
// last request admitted. The shell in the home hub (hub-limits.ts) persists it and answers with it.
import type { PartialRateLimits, RateLimitAsk } from "../../schema/hub.ts";
import type { RateLimitUsage } from "../../schema/rate-limits-api.ts";

/** The window every per-minute limit drains over. */
export const WINDOW_MS = 60_000;
/** What a refusal for concurrency says to wait: a slot frees when one of the caller's requests ends. */
const CONCURRENCY_RETRY_MS = 1_000;
/** An unsettled reservation (its hub crashed) is kept this much past the request's own deadline. */
export const RESERVATION_GRACE_MS = 5_000;

export const LIMIT_NAMES = ["rpm", "tpm", "concurrency"] as const;
export type LimitName = (typeof LIMIT_NAMES)[number];
export type Limits = Record<LimitName, number>;

/** The refusal metric's `reason`: which limit refused, the subject's own or its model's. */
export type RefusalReason = LimitName | `model_${LimitName}`;

/**
 * A quota as the RateLimit-Policy and RateLimit fields give it (headers.ts): `remaining` now, and
 * seconds until the whole quota is back (per-minute limits only).
 */
export interface PolicyState {
  name: string;
  quota: number;
  kind: LimitName;
  remaining: number;
  resetSeconds?: number;
}

export type Verdict =
  | { admitted: true; id: string; policies: PolicyState[] }
  | {
      admitted: false;
      reason: RefusalReason;
      message: string;
      retryAfterSeconds: number;
      policies: PolicyState[];
    };

/** Usage that drains at `limit` per WINDOW_MS: a token bucket seen from its spent side. */
interface Drain {
  used: number;
  at: number;
}

interface Reservation {
  id: string;
  tokens: number;
  model: string | null;
  expiresAt: number;
  /**
   * Admitted inside a dispatch to this very hub: its request lives (and ends) here, so after a
   * restart it is known to be over. Others were admitted by RPC for another pool's hub to settle.
   */
  local: boolean;
}

interface ModelMeter {
  limits: PartialRateLimits;
  requests: Drain;
  tokens: Drain;
}

interface SubjectState {
  /** The role and claim of the subject's last request (GET /rate-limits shows limits for them). */
  role: string;
  claim: PartialRateLimits | undefined;
  /** The limits in force at the last admission: what the buckets drain at. */
  limits: Limits;
  requests: Drain;
  tokens: Drain;
  open: Map<string, Reservation>;
  models: Map<string, ModelMeter>;
}

/** A subject's state as storage keeps it (JSON). */
export interface StoredSubject {
  role: string;
  claim?: PartialRateLimits;
  limits: Limits;
  requests: Drain;
  tokens: Drain;
  open: Reservation[];
  models: Record<string, ModelMeter>;
}

/** What the home knows of a subject for GET /rate-limits (the route adds RATE_LIMITS' defaults). */
export interface SubjectReport {
  /** Null when the subject has sent nothing the limiter still remembers. */
  role: string | null;
  claim: PartialRateLimits | null;
  overrides: PartialRateLimits;
  usage: RateLimitUsage;
  models: { model: string; limits: PartialRateLimits; usage: RateLimitUsage }[];
}

function drained(d: Drain, limit: number, now: number): number {
  return Math.max(0, d.used - (Math.max(0, now - d.at) * limit) / WINDOW_MS);
}

/** Brings a drain to `now` at `limit` (before the limit it drains at changes). */
function settleDrain(d: Drain, limit: number, now: number): void {
  d.used = drained(d, limit, now);
  d.at = Math.max(d.at, now);
}

/** A limit's value: the admin's override, else the token's claim, else the role's default. */
export function effectiveLimit(
  name: LimitName,
  role: Limits,
  claim: PartialRateLimits | undefined,
  override: PartialRateLimits | undefined,
): number {
  return override?.[name] ?? claim?.[name] ?? role[name];
}

export function limitSource(
  name: LimitName,
  claim: PartialRateLimits | null | undefined,
  override: PartialRateLimits | undefined,
): "override" | "token" | "role" {
  if (override?.[name] !== undefined) return "override";
  if (claim?.[name] !== undefined) return "token";
  return "role";
}

const resetSeconds = (used: number, limit: number) => Math.ceil((used * WINDOW_MS) / limit / 1000);

export class RateLimitBook {
  readonly #subjects = new Map<string, SubjectState>();
  readonly #overrides = new Map<string, PartialRateLimits>();
  /** Subjects changed since the shell last stored them. */
  readonly dirty = new Set<string>();
  /** Reservation ids: unique per wake (random prefix), then counted. */
  readonly #idPrefix: string;
  #counter = 0;

  constructor(idPrefix: string) {
    this.#idPrefix = idPrefix;
  }

  has(subject: string): boolean {
    return this.#subjects.has(subject);
  }

  get subjects(): number {
    return this.#subjects.size;
  }

  /**
   * Reserves one request, `ask.tokens` tokens and a concurrency slot for `ask.subject`, or refuses
   * with the limit that would be passed. `deadlineMs` from now, an unsettled reservation expires.
   */
  admit(ask: RateLimitAsk, now: number, deadlineMs: number, local: boolean): Verdict {
    const override = this.#overrides.get(ask.subject);
    const limits: Limits = {
      rpm: effectiveLimit("rpm", ask.limits, ask.claim, override),
      tpm: effectiveLimit("tpm", ask.limits, ask.claim, override),
      concurrency: effectiveLimit("concurrency", ask.limits, ask.claim, override),
    };
    const state = this.#state(ask.subject, ask.role, limits, now);
    state.role = ask.role;
    state.claim = ask.claim;
    // Drain at the limits in force so far, then at the new ones.
    settleDrain(state.requests, state.limits.rpm, now);
    settleDrain(state.tokens, state.limits.tpm, now);
    state.limits = limits;
    const meter = ask.model === undefined ? null : this.#meter(state, ask.model.key, ask.model.limits, now);

    // Every limit the request would pass: the first names the refusal, the longest wait is its Retry-After.
    const refusals: { reason: RefusalReason; waitMs: number; message: string }[] = [];
    const refuse = (reason: RefusalReason, waitMs: number, message: string) => {
      refusals.push({ reason, waitMs, message });
    };
    const check = (
      prefix: "" | "model_",
      what: string,
      meterLimits: PartialRateLimits,
      requests: number,
      tokens: number,
      open: number,
    ) => {
      const { rpm, tpm, concurrency } = meterLimits;
      if (rpm !== undefined && requests + 1 > rpm) {
        refuse(
          `${prefix}rpm`,
          ((requests + 1 - rpm) * WINDOW_MS) / rpm,
          `${what}requests per minute (limit ${rpm})`,
        );
      }
      if (tpm !== undefined && ask.tokens > tpm) {
        refuse(
          `${prefix}tpm`,
          WINDOW_MS,
          `${what}tokens per minute (limit ${tpm}), and this request alone needs ${ask.tokens} (its prompt and max_tokens): lower max_tokens`,
        );
      } else if (tpm !== undefined && tokens + ask.tokens > tpm) {
        refuse(
          `${prefix}tpm`,
          ((tokens + ask.tokens - tpm) * WINDOW_MS) / tpm,
          `${what}tokens per minute (limit ${tpm})`,
        );
      }
      if (concurrency !== undefined && open >= concurrency) {
        refuse(
          `${prefix}concurrency`,
          CONCURRENCY_RETRY_MS,
          `${what}concurrent requests (limit ${concurrency})`,
        );
      }
    };
    check("", "", limits, state.requests.used, state.tokens.used, state.open.size);
    if (meter !== null && ask.model !== undefined) {
      check(
        "model_",
        `model ${ask.model.key}: `,
        meter.limits,
        meter.requests.used,
        meter.tokens.used,
        this.#modelOpen(state, ask.model.key),
      );
    }
    const [refusal] = refusals;
    if (refusal !== undefined) {
      const { reason, message } = refusal;
      const waitMs = Math.max(...refusals.map((r) => r.waitMs));
      return {
        admitted: false,
        reason,
        message: `rate limit exceeded: ${message}`,
        retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)),
        policies: this.#policies(state, meter, ask.model?.key),
      };
    }
    state.requests.used += 1;
    state.tokens.used += ask.tokens;
    if (meter !== null) {
      meter.requests.used += 1;
      meter.tokens.used += ask.tokens;
    }
    const id = `${this.#idPrefix}.${++this.#counter}`;
    state.open.set(id, {
      id,
      tokens: ask.tokens,
      model: ask.model?.key ?? null,
      expiresAt: now + deadlineMs + RESERVATION_GRACE_MS,
      local,
    });
    this.dirty.add(ask.subject);
    return { admitted: true, id, policies: this.#policies(state, meter, ask.model?.key) };
  }

  /**
   * The request ended having used `tokens` (prompt + completion), or null when it never reached an
   * agent (released: its request, tokens and slot are given back). A reservation already closed
   * (released by the Worker first, or expired) still has its tokens charged. True when it was open.
   */
  settle(subject: string, id: string, tokens: number | null, now: number): boolean {
    const state = this.#subjects.get(subject);
    if (state === undefined) return false;
    const reservation = state.open.get(id);
    this.dirty.add(subject);
    settleDrain(state.requests, state.limits.rpm, now);
    settleDrain(state.tokens, state.limits.tpm, now);
    if (reservation === undefined) {
      if (tokens !== null) state.tokens.used += tokens;
      return false;
    }
    state.open.delete(id);
    const meter = reservation.model === null ? undefined : state.models.get(reservation.model);
    const tokenDelta = (tokens ?? 0) - reservation.tokens;
    const requestDelta = tokens === null ? -1 : 0;
    state.tokens.used = Math.max(0, state.tokens.used + tokenDelta);
    state.requests.used = Math.max(0, state.requests.used + requestDelta);
    if (meter !== undefined) {
      settleDrain(meter.requests, meter.limits.rpm ?? state.limits.rpm, now);
      settleDrain(meter.tokens, meter.limits.tpm ?? state.limits.tpm, now);
      meter.tokens.used = Math.max(0, meter.tokens.used + tokenDelta);
      meter.requests.used = Math.max(0, meter.requests.used + requestDelta);
    }
    return true;
  }

  /**
   * Closes reservations admitted by RPC whose deadline passed (the serving hub crashed, or its
   * settle was lost), keeping what they reserved charged. A local reservation is never expired:
   * its request settles it, by its own deadline at the latest (and a restart closes it: load()).
   */
  expire(now: number): number {
    let closed = 0;
    for (const [subject, state] of this.#subjects) {
      for (const r of [...state.open.values()]) {
        if (r.local || r.expiresAt > now) continue;
        this.settle(subject, r.id, r.tokens, now);
        closed += 1;
      }
    }
    return closed;
  }

  /** The next moment a reservation admitted by RPC expires, or null. */
  nextExpiry(): number | null {
    let next: number | null = null;
    for (const state of this.#subjects.values()) {
      for (const r of state.open.values()) {
        if (!r.local && (next === null || r.expiresAt < next)) next = r.expiresAt;
      }
    }
    return next;
  }

  override(subject: string): PartialRateLimits {
    return { ...this.#overrides.get(subject) };
  }

  /** Replaces the subject's overrides (empty: none). */
  setOverride(subject: string, overrides: PartialRateLimits): void {
    if (Object.keys(overrides).length === 0) this.#overrides.delete(subject);
    else this.#overrides.set(subject, { ...overrides });
  }

  report(subject: string, now: number): SubjectReport {
    const state = this.#subjects.get(subject);
    const overrides = this.override(subject);
    if (state === undefined) {
      return {
        role: null,
        claim: null,
        overrides,
        usage: { rpm: 0, tpm: 0, concurrency: 0 },
        models: [],
      };
    }
    return {
      role: state.role,
      claim: state.claim ?? null,
      overrides,
      usage: {
        rpm: Math.ceil(drained(state.requests, state.limits.rpm, now)),
        tpm: Math.ceil(drained(state.tokens, state.limits.tpm, now)),
        concurrency: state.open.size,
      },
      models: [...state.models].map(([model, meter]) => ({
        model,
        limits: { ...meter.limits },
        usage: {
          rpm: Math.ceil(drained(meter.requests, meter.limits.rpm ?? state.limits.rpm, now)),
          tpm: Math.ceil(drained(meter.tokens, meter.limits.tpm ?? state.limits.tpm, now)),
          concurrency: this.#modelOpen(state, model),
        },
      })),
    };
  }

  /** Forgets subjects whose buckets have drained and who hold no reservation; returns them. */
  prune(now: number): string[] {
    const gone: string[] = [];
    for (const [subject, state] of this.#subjects) {
      if (state.open.size > 0) continue;
      if (drained(state.requests, state.limits.rpm, now) > 0) continue;
      if (drained(state.tokens, state.limits.tpm, now) > 0) continue;
      this.#subjects.delete(subject);
      gone.push(subject);
    }
    return gone;
  }

  stored(subject: string): StoredSubject | undefined {
    const state = this.#subjects.get(subject);
    if (state === undefined) return undefined;
    return {
      role: state.role,
      ...(state.claim === undefined ? {} : { claim: state.claim }),
      limits: state.limits,
      requests: state.requests,
      tokens: state.tokens,
      open: [...state.open.values()],
      models: Object.fromEntries(state.models),
    };
  }

  /**
   * A subject as storage kept it. Its local reservations are closed at once, keeping what they
   * reserved charged: their requests lived in the memory of the hub's previous life.
   */
  load(subject: string, stored: StoredSubject, now: number): void {
    this.#subjects.set(subject, {
      role: stored.role,
      claim: stored.claim,
      limits: stored.limits,
      requests: stored.requests,
      tokens: stored.tokens,
      open: new Map(stored.open.map((r) => [r.id, r])),
      models: new Map(Object.entries(stored.models)),
    });
    for (const r of stored.open) if (r.local) this.settle(subject, r.id, r.tokens, now);
  }

  #state(subject: string, role: string, limits: Limits, now: number): SubjectState {
    let state = this.#subjects.get(subject);
    if (state === undefined) {
      state = {
        role,
        claim: undefined,
        limits,
        requests: { used: 0, at: now },
        tokens: { used: 0, at: now },
        open: new Map(),
        models: new Map(),
      };
      this.#subjects.set(subject, state);
    }
    return state;
  }

  #meter(state: SubjectState, key: string, limits: PartialRateLimits, now: number): ModelMeter {
    let meter = state.models.get(key);
    if (meter === undefined) {
      meter = { limits, requests: { used: 0, at: now }, tokens: { used: 0, at: now } };
      state.models.set(key, meter);
    }
    settleDrain(meter.requests, meter.limits.rpm ?? state.limits.rpm, now);
    settleDrain(meter.tokens, meter.limits.tpm ?? state.limits.tpm, now);
    meter.limits = limits;
    return meter;
  }

  #modelOpen(state: SubjectState, key: string): number {
    let open = 0;
    for (const r of state.open.values()) if (r.model === key) open += 1;
    return open;
  }

  #policies(state: SubjectState, meter: ModelMeter | null, model: string | undefined): PolicyState[] {
    const { limits } = state;
    const policies: PolicyState[] = [
      perMinute("rpm", "rpm", limits.rpm, state.requests.used),
      perMinute("tpm", "tpm", limits.tpm, state.tokens.used),
      {
        name: "concurrency",
        kind: "concurrency",
        quota: limits.concurrency,
        remaining: Math.max(0, limits.concurrency - state.open.size),
      },
    ];
    if (meter !== null && model !== undefined) {
      const { rpm, tpm, concurrency } = meter.limits;
      if (rpm !== undefined) policies.push(perMinute(`rpm:${model}`, "rpm", rpm, meter.requests.used));
      if (tpm !== undefined) policies.push(perMinute(`tpm:${model}`, "tpm", tpm, meter.tokens.used));
      if (concurrency !== undefined) {
        policies.push({
          name: `concurrency:${model}`,
          kind: "concurrency",
          quota: concurrency,
          remaining: Math.max(0, concurrency - this.#modelOpen(state, model)),
        });
      }
    }
    return policies;
  }
}

function perMinute(name: string, kind: "rpm" | "tpm", quota: number, used: number): PolicyState {
  return {
    name,
    kind,
    quota,
    remaining: Math.max(0, Math.floor(quota - used)),
    resetSeconds: resetSeconds(used, quota),
  };
}
