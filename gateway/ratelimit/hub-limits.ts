// The rate limiter inside an AgentHub. The default pool's hub is the limiter's home: it holds
// every subject's buckets and reservations (book.ts) and the admins' overrides, so one
// single-threaded object decides every admission, exactly, whichever isolate or pool serves the
// request. A request only the default pool can serve is admitted inside its own dispatch (no
// extra round trip); the Worker admits any other by RPC first (dispatch.ts). Whichever hub serves
// a request settles its reservation when it ends: here, or by RPC to the home.
import {
  DEFAULT_POOL,
  type DispatchRequest,
  type PartialRateLimits,
  type RateLimitAsk,
} from "../../schema/hub.ts";
import type { MetricFamily, Sample } from "../../schema/monitoring.ts";
import type { RateLimitOverrideRequest } from "../../schema/rate-limits-api.ts";
import type { AgentHub } from "../hub/agent-hub.ts";
import { errorResponse } from "../hub/hub-response.ts";
import type { InferenceJob } from "../hub/inference-job.ts";
import { describeError, log } from "../log.ts";
import {
  LIMIT_NAMES,
  RateLimitBook,
  RESERVATION_GRACE_MS,
  type StoredSubject,
  type SubjectReport,
} from "./book.ts";
import { rateLimitHeaders } from "./headers.ts";

/** Changed buckets reach storage at most this late: a restart forgets at most this much usage. */
export const RATE_LIMIT_FLUSH_MS = 1_000;
const OVERRIDE_PREFIX = "rl:o:";
const SUBJECT_PREFIX = "rl:s:";
const REFUSALS_KEY = "rl:refusals";
const RESTORE_RETRY_MS = 1_000;
/** Storage takes at most 128 keys per put or delete. */
const STORAGE_BATCH = 128;

export type RateLimitCommand =
  | { op: "admit"; ask: RateLimitAsk }
  | { op: "settle"; subject: string; id: string; tokens: number | null }
  | { op: "report"; subject: string }
  | { op: "override"; subject: string; patch: RateLimitOverrideRequest }
  | { op: "clear"; subject: string };

export type AdmitAnswer =
  | { admitted: true; id: string; headers: Record<string, string> }
  | { admitted: false; message: string; retryAfterSeconds: number; headers: Record<string, string> };

export interface RateLimitAnswers {
  admit: AdmitAnswer;
  settle: { open: boolean };
  report: SubjectReport;
  override: SubjectReport;
  clear: SubjectReport;
}

export interface HubRateLimitsHost {
  storage: DurableObjectStorage;
  pool(): string;
  /** The limiter's home: the default pool's hub. */
  home(): DurableObjectStub<AgentHub>;
  /** REQUEST_TIMEOUT_MS and REQUEST_TIMEOUT_MAX_MS: how long a reservation may stay open. */
  requestTimeoutMs: number;
  requestTimeoutMaxMs: number;
  wakeAt(at: number): void;
  waitUntil(promise: Promise<unknown>): void;
}

/** Tokens a request that ended used: as the agent counted them, else what it is known to have used. */
export function usedTokens(job: InferenceJob, ask: RateLimitAsk): number | null {
  if (job.usage !== null) return job.usage.promptTokens + job.usage.completionTokens;
  // Never sent to an agent (queue full, queue timeout, refused): nothing was used.
  if (job.firstDispatchedAt === null) return null;
  // Failed or cancelled after dispatch: the prompt as estimated, and what streamed before the end.
  return ask.promptTokens + job.outputTokens;
}

export class HubRateLimits {
  readonly #book = new RateLimitBook(crypto.randomUUID().slice(0, 8));
  /** Refusals by pool, route and reason (ml_inference_rate_limited_total). */
  #refusals: Record<string, number> = {};
  #refusalsDirty = false;
  /** Subjects whose state is in storage (so a forgotten one is deleted there too). */
  readonly #stored = new Set<string>();
  #flushAt: number | null = null;
  /** When a failed restore is tried again; null once restored. */
  #retryAt: number | null = null;

  constructor(private readonly host: HubRateLimitsHost) {}

  /**
   * On wake: overrides, buckets and counts from storage; reservations of the last life closed.
   * Never throws: a failed read is logged and retried on the hub's alarm (restoreDue), and what
   * was admitted meanwhile is kept (a stored subject does not replace one already in memory).
   */
  async restore(now: number): Promise<void> {
    let entries: Map<string, unknown>;
    try {
      entries = await this.host.storage.list<unknown>({ prefix: "rl:" });
    } catch (err) {
      this.#retryAt = now + RESTORE_RETRY_MS;
      this.host.wakeAt(this.#retryAt);
      log("error", "rate limits not restored (overrides and buckets); retrying", describeError(err));
      return;
    }
    this.#retryAt = null;
    for (const [key, value] of entries) {
      if (key.startsWith(OVERRIDE_PREFIX)) {
        this.#book.setOverride(key.slice(OVERRIDE_PREFIX.length), value as PartialRateLimits);
      } else if (key.startsWith(SUBJECT_PREFIX)) {
        const subject = key.slice(SUBJECT_PREFIX.length);
        if (!this.#book.has(subject)) {
          this.#book.load(subject, value as StoredSubject, now);
          this.#book.dirty.add(subject);
        }
        this.#stored.add(subject);
      } else if (key === REFUSALS_KEY) {
        for (const [k, n] of Object.entries(value as Record<string, number>)) {
          this.#refusals[k] = (this.#refusals[k] ?? 0) + n;
        }
      }
    }
    this.#book.expire(now);
    if (this.#book.dirty.size > 0) this.#scheduleFlush(now);
  }

  /** A failed restore is due for another try. */
  restoreDue(now: number): boolean {
    return this.#retryAt !== null && this.#retryAt <= now;
  }

  /**
   * A dispatch that arrives with an ask and no id is admitted here (this is the home); refused, it
   * is answered 429 without reaching the pool; admitted, its answer carries the headers, and a
   * refusal before any job exists (no agent, unknown model) releases it at once.
   */
  dispatch(
    request: DispatchRequest,
    submit: () => Promise<Response> | Response,
  ): Promise<Response> | Response {
    const ask = request.reservation;
    if (ask === undefined || ask.id !== undefined) return submit();
    const now = Date.now();
    const verdict = this.#admit(ask, now, true);
    if (!verdict.admitted) {
      return errorResponse("RATE_LIMITED", verdict.message, verdict.retryAfterSeconds, verdict.headers);
    }
    // The job keeps this very object: finished() settles by this id.
    ask.id = verdict.id;
    const answer = submit();
    if (answer instanceof Response) {
      this.#book.settle(ask.subject, verdict.id, null, Date.now());
      return withHeaders(answer, verdict.headers);
    }
    return answer.then((response) => withHeaders(response, verdict.headers));
  }

  /** The dispatcher's `finished`: the request's reservation settles with what it used. */
  finished(job: InferenceJob, now: number): void {
    const ask = job.request.reservation;
    if (ask?.id === undefined) return;
    const tokens = usedTokens(job, ask);
    if (this.host.pool() === DEFAULT_POOL) {
      this.#book.settle(ask.subject, ask.id, tokens, now);
      this.#scheduleFlush(now);
      return;
    }
    const settle = this.host
      .home()
      .rateLimit({ op: "settle", subject: ask.subject, id: ask.id, tokens })
      .catch((err: unknown) =>
        // The reservation expires after the request's deadline instead.
        log("error", "rate limit settlement did not reach the default pool's hub", {
          requestId: job.id,
          ...describeError(err),
        }),
      );
    this.host.waitUntil(settle);
  }

  /** The RPC (AgentHub.rateLimit): admissions for other pools, settlements, and the admin routes. */
  async command<C extends RateLimitCommand>(command: C, now: number): Promise<RateLimitAnswers[C["op"]]> {
    return (await this.#command(command, now)) as RateLimitAnswers[C["op"]];
  }

  async #command(command: RateLimitCommand, now: number): Promise<RateLimitAnswers[keyof RateLimitAnswers]> {
    switch (command.op) {
      case "admit":
        return this.#admit(command.ask, now, false);
      case "settle": {
        const open = this.#book.settle(command.subject, command.id, command.tokens, now);
        this.#scheduleFlush(now);
        return { open };
      }
      case "report":
        return this.#book.report(command.subject, now);
      case "override": {
        const next = this.#book.override(command.subject);
        for (const name of LIMIT_NAMES) {
          const value = command.patch[name];
          if (value === null) delete next[name];
          else if (value !== undefined) next[name] = value;
        }
        await this.#storeOverride(command.subject, next);
        return this.#book.report(command.subject, now);
      }
      case "clear":
        await this.#storeOverride(command.subject, {});
        return this.#book.report(command.subject, now);
    }
  }

  /** ml_inference_rate_limited_total: only the home has series. */
  families(): MetricFamily[] {
    const samples: Sample[] = Object.entries(this.#refusals).map(([key, value]) => {
      const [pool = "", route = "", reason = ""] = key.split("\n");
      return { labels: { pool, route, reason }, value };
    });
    return [{ name: "ml_inference_rate_limited_total", type: "counter", samples }];
  }

  nextDue(): number | null {
    let next: number | null = null;
    for (const at of [this.#book.nextExpiry(), this.#flushAt, this.#retryAt]) {
      if (at !== null && (next === null || at < next)) next = at;
    }
    return next;
  }

  /** The hub's alarm: expired reservations closed, changed buckets and counts written. */
  flushIfDue(now: number): void {
    if (this.#book.expire(now) > 0) this.#scheduleFlush(now);
    if (this.#flushAt === null || now < this.#flushAt) return;
    this.#flushAt = null;
    const puts: Record<string, unknown> = {};
    const deletes: string[] = [];
    for (const subject of this.#book.prune(now)) this.#book.dirty.add(subject);
    for (const subject of this.#book.dirty) {
      const stored = this.#book.stored(subject);
      if (stored !== undefined) {
        puts[SUBJECT_PREFIX + subject] = stored;
        this.#stored.add(subject);
      } else if (this.#stored.delete(subject)) deletes.push(SUBJECT_PREFIX + subject);
    }
    this.#book.dirty.clear();
    if (this.#refusalsDirty) {
      puts[REFUSALS_KEY] = this.#refusals;
      this.#refusalsDirty = false;
    }
    // Unconfirmed: the output gate must not hold answers for these writes. A crash loses at most
    // RATE_LIMIT_FLUSH_MS of usage, which the restart then does not count.
    const writes: Promise<unknown>[] = [];
    const keys = Object.keys(puts);
    for (let i = 0; i < keys.length; i += STORAGE_BATCH) {
      const batch = Object.fromEntries(keys.slice(i, i + STORAGE_BATCH).map((k) => [k, puts[k]]));
      writes.push(this.host.storage.put(batch, { allowUnconfirmed: true }));
    }
    for (let i = 0; i < deletes.length; i += STORAGE_BATCH) {
      writes.push(this.host.storage.delete(deletes.slice(i, i + STORAGE_BATCH), { allowUnconfirmed: true }));
    }
    if (writes.length > 0) {
      this.host.waitUntil(
        Promise.all(writes).catch((err: unknown) =>
          log("error", "rate limit state not written", describeError(err)),
        ),
      );
    }
  }

  #admit(ask: RateLimitAsk, now: number, local: boolean): AdmitAnswer {
    const deadlineMs = Math.min(ask.timeoutMs ?? this.host.requestTimeoutMs, this.host.requestTimeoutMaxMs);
    const verdict = this.#book.admit(ask, now, deadlineMs, local);
    const headers = rateLimitHeaders(verdict.policies);
    this.#scheduleFlush(now);
    if (!verdict.admitted) {
      const key = `${ask.pool}\n${ask.route}\n${verdict.reason}`;
      this.#refusals[key] = (this.#refusals[key] ?? 0) + 1;
      this.#refusalsDirty = true;
      return {
        admitted: false,
        message: verdict.message,
        retryAfterSeconds: verdict.retryAfterSeconds,
        headers,
      };
    }
    if (!local) this.host.wakeAt(now + deadlineMs + RESERVATION_GRACE_MS);
    return { admitted: true, id: verdict.id, headers };
  }

  async #storeOverride(subject: string, overrides: PartialRateLimits): Promise<void> {
    const key = OVERRIDE_PREFIX + subject;
    if (Object.keys(overrides).length === 0) await this.host.storage.delete(key);
    else await this.host.storage.put(key, overrides);
    this.#book.setOverride(subject, overrides);
    log("info", "rate limit overrides changed", { subject, overrides });
  }

  #scheduleFlush(now: number): void {
    if (this.#flushAt !== null) return;
    this.#flushAt = now + RATE_LIMIT_FLUSH_MS;
    this.host.wakeAt(this.#flushAt);
  }
}

/** A hub-made Response has mutable headers; one that does not (never expected) is copied. */
function withHeaders(response: Response, headers: Record<string, string>): Response {
  try {
    for (const [name, value] of Object.entries(headers)) response.headers.set(name, value);
    return response;
  } catch {
    const copy = new Response(response.body, response);
    for (const [name, value] of Object.entries(headers)) copy.headers.set(name, value);
    return copy;
  }
}
