// The life of inference requests in one pool: admission (404/503/429, model fallbacks), dispatch
// to an agent whose breakers allow it, the queue, failover before the first chunk, deadlines
// (request, first chunk, idle), completion, slow callers, and cancellation when the caller goes.
// No Durable Object APIs here: the AgentHub shell injects sockets, clocks and alarms.
import type { ErrorCode } from "../../schema/api.ts";
import type {
  AgentErrorCode,
  CancelFrame,
  ChunkFrame,
  DoneFrame,
  ErrorFrame,
  GatewayFrame,
} from "../../schema/protocol.ts";
import type { GatewayConfig } from "../config.ts";
import { STATUS_BY_CODE } from "../errors.ts";
import { log } from "../log.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { AttemptOutcome, CircuitBreakers } from "./circuit-breaker.ts";
import type { DispatchRequest, HubMetrics, RequestOutcome } from "./dispatch.ts";
import { InferenceJob } from "./inference-job.ts";
import {
  ewma,
  hasCandidate,
  modelAvailability,
  pickAgent,
  RequestQueue,
  retryAfterSeconds,
  slotsFor,
} from "./scheduling.ts";

export type DispatcherConfig = Pick<
  GatewayConfig,
  | "queueMax"
  | "queueTimeoutMs"
  | "defaultModel"
  | "dispatchMaxAttempts"
  | "requestTimeoutMs"
  | "requestTimeoutMaxMs"
  | "firstChunkTimeoutMs"
  | "idleChunkTimeoutMs"
  | "streamBufferMaxBytes"
  | "modelFallbacks"
>;

export interface DispatcherHost {
  config: DispatcherConfig;
  breakers: CircuitBreakers;
  /** Every connection of the pool, ready or not. */
  connections(): Iterable<AgentConnection>;
  /** The current connection of an agent id, if any. */
  connection(agentId: string): AgentConnection | undefined;
  knownModels(): ReadonlySet<string>;
  /** Sends a frame; false when the socket failed (the host then reports the agent lost). */
  send(agent: AgentConnection, frame: GatewayFrame): boolean;
  /** Asks to be woken (expire()) no later than `at`. */
  wakeAt(at: number): void;
  now(): number;
}

/** How many finished request ids are remembered, to tell late frames from orphaned generations. */
const RECENT_IDS = 1024;

/**
 * How long a cancelled generation keeps its slot while the hub waits for the agent's `done`
 * (the node agent answers a cancel within about 2 s: CANCEL_USAGE_GRACE_MS there).
 */
export const CANCEL_ACK_GRACE_MS = 5_000;

export class Dispatcher {
  readonly metrics: HubMetrics = {
    requests: {
      ok: 0,
      upstream_error: 0,
      cancelled: 0,
      queue_full: 0,
      queue_timeout: 0,
      timeout: 0,
      slow_consumer: 0,
      no_agent: 0,
      model_not_found: 0,
    },
    retries: 0,
    fallbacks: 0,
    tokens: { prompt: 0, completion: 0 },
  };
  readonly queue: RequestQueue<InferenceJob>;
  readonly #jobs = new Map<string, InferenceJob>();
  /** Ids of requests that ended here recently: frames for them are late, not orphans. */
  readonly #recentIds = new Set<string>();
  /** Recent time from dispatch to `done`, per model and across the pool (for Retry-After). */
  readonly #serviceTimeMs = new Map<string, number>();
  #poolServiceTimeMs: number | null = null;
  readonly #config: DispatcherConfig;
  readonly #breakers: CircuitBreakers;

  constructor(private readonly host: DispatcherHost) {
    this.#config = host.config;
    this.#breakers = host.breakers;
    this.queue = new RequestQueue(host.config.queueMax);
  }

  /**
   * Admits a request: an error Response when it cannot be served at all or the queue is full,
   * else the job's Response (resolved at the first chunk, or with an error before it).
   */
  submit(request: DispatchRequest, callerSignal: AbortSignal): Promise<Response> | Response {
    const now = this.host.now();
    const requested = request.model ?? this.#defaultModel(now);
    if (requested === undefined) {
      this.#count("no_agent");
      return errorResponse("NO_AGENT_AVAILABLE", "no agent serves any model", 1);
    }
    const model = this.#servingModel(requested, now);
    if (model instanceof Response) return model;

    const timeoutMs = Math.min(
      request.timeoutMs ?? this.#config.requestTimeoutMs,
      this.#config.requestTimeoutMaxMs,
    );
    const job = new InferenceJob(
      this.#uniqueId(request.requestId),
      model,
      requested,
      request,
      {
        requestDeadline: now + timeoutMs,
        queueDeadline: now + this.#config.queueTimeoutMs,
        streamBufferMaxBytes: this.#config.streamBufferMaxBytes,
      },
      { callerGone: (j) => this.callerGone(j), slowConsumer: (j) => this.#slowConsumer(j) },
    );
    this.#jobs.set(job.id, job);
    if (job.isFallback) {
      this.metrics.fallbacks += 1;
      log("info", "serving a fallback model", { requestId: job.id, requested, model });
    }
    // Only fires with the enable_request_signal compatibility flag: without it, a caller that
    // leaves while queued or before the first chunk is never noticed (measured in workerd).
    callerSignal.addEventListener("abort", () => this.callerGone(job));

    const agent = pickAgent(this.#ready(), model, this.#exclusions(job, now).pick);
    if (agent !== null) {
      this.#send(job, agent);
    } else if (this.queue.push(job)) {
      this.host.wakeAt(job.deadline);
    } else {
      job.fail(
        "QUEUE_FULL",
        `the queue for "${model}" is full`,
        STATUS_BY_CODE.QUEUE_FULL,
        this.#retryAfter(model, now),
      );
      this.#finish(job, "queue_full");
    }
    return job.response;
  }

  onChunk(agent: AgentConnection, frame: ChunkFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) {
      if (!agent.releasing.has(frame.id)) this.#orphan(agent, frame.id);
      return;
    }
    const now = this.host.now();
    job.idleDeadline = now + this.#config.idleChunkTimeoutMs;
    if (!job.started) {
      job.firstChunkAt = now;
      job.firstChunkDeadline = null;
      agent.latencyMs = ewma(agent.latencyMs, now - (job.dispatchedAt ?? now));
      // Once per stream, not per chunk: a later chunk only moves the idle deadline later, and the
      // alarm, when it fires early, reschedules itself for the next deadline due.
      this.host.wakeAt(job.idleDeadline);
    }
    job.chunk(frame);
  }

  onDone(agent: AgentConnection, frame: DoneFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) {
      this.#released(agent, frame.id);
      return;
    }
    const now = this.host.now();
    const serviceTime = now - (job.dispatchedAt ?? now);
    this.#serviceTimeMs.set(job.model, ewma(this.#serviceTimeMs.get(job.model) ?? null, serviceTime));
    this.#poolServiceTimeMs = ewma(this.#poolServiceTimeMs, serviceTime);
    this.metrics.tokens.prompt += frame.usage.promptTokens;
    this.metrics.tokens.completion += frame.usage.completionTokens;
    this.#settle(job, "success", now);
    job.done(frame);
    this.#finish(job, "ok");
  }

  onError(agent: AgentConnection, frame: ErrorFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) {
      this.#released(agent, frame.id);
      return;
    }
    const code = errorCodeFor(frame.code);
    const message = `agent ${agent.id}: ${frame.code}: ${frame.message}`.slice(0, 500);
    const outcome = breakerOutcomeFor(frame.code);
    if (!job.started && frame.retryable) {
      this.#retryOrFail(job, agent, code, message, outcome, this.host.now());
    } else {
      this.#settle(job, outcome, this.host.now());
      this.#fail(job, code, message);
    }
  }

  /**
   * The agent's connection is gone: its requests fail over (before the first chunk) or end with
   * an error. One disconnect is one agent failure for the breaker, however many requests it held.
   */
  agentLost(agent: AgentConnection, reason: string): void {
    const now = this.host.now();
    let outcome: AttemptOutcome = "agent_failure";
    for (const id of [...agent.requests]) {
      const job = this.#jobs.get(id);
      if (job === undefined || job.agent !== agent) continue;
      if (job.started) {
        this.#settle(job, outcome, now);
        this.#fail(job, "UPSTREAM_ERROR", `${reason} mid-stream`);
      } else {
        this.#retryOrFail(job, agent, "UPSTREAM_ERROR", `${reason} before answering`, outcome, now);
      }
      outcome = "neutral";
    }
    this.pump();
  }

  /** Dispatches queued requests to free agents, oldest first within each model. */
  pump(): void {
    const now = this.host.now();
    for (const model of this.queue.models()) {
      for (const job of this.queue.itemsFor(model)) {
        const agent = pickAgent(this.#ready(), model, this.#exclusions(job, now).pick);
        if (agent === null) {
          // Nobody free for this model at all: the rest of its queue waits too.
          if (pickAgent(this.#ready(), model, this.#exclusions(null, now, model).pick) === null) break;
          continue; // Only agents this request already failed on are free; let the next one go.
        }
        // A nested pump (a failed send re-routes jobs) may have taken it already.
        if (this.queue.remove(job)) this.#send(job, agent);
      }
    }
  }

  /**
   * Ends what is overdue at `now`: queued requests past their queue or request deadline (504
   * QUEUE_TIMEOUT / GATEWAY_TIMEOUT), requests past their deadline (cancel `deadline`, 504 or an
   * error event), attempts without a first chunk in time (cancel, agent failure, failover), and
   * streams idle for too long (cancel, agent failure, error event).
   */
  expire(now: number): void {
    for (const job of this.queue.takeExpired(now)) {
      if (job.requestDeadline <= now) {
        this.#fail(job, "GATEWAY_TIMEOUT", `the request's deadline passed while it was queued`);
      } else {
        job.fail(
          "QUEUE_TIMEOUT",
          `no agent became free for "${job.model}" within ${this.#config.queueTimeoutMs} ms`,
          STATUS_BY_CODE.QUEUE_TIMEOUT,
        );
        this.#finish(job, "queue_timeout");
      }
    }
    for (const agent of this.host.connections()) {
      for (const [id, until] of agent.releasing) {
        if (until > now) continue;
        agent.releasing.delete(id);
        log("warn", "no answer to cancel; freeing the slot", { requestId: id, agentId: agent.id });
      }
    }
    // Breakers count at the hub's own clock (the same as `now` in production; tests pass a later one).
    const clock = this.host.now();
    for (const job of [...this.#jobs.values()]) {
      if (job.phase === "queued" || job.phase === "finished") continue;
      if (job.requestDeadline <= now) {
        this.#cancel(job, "deadline");
        this.#settle(job, "neutral", clock);
        this.#fail(job, "GATEWAY_TIMEOUT", "the request's deadline passed");
      } else if (
        job.phase === "dispatched" &&
        job.firstChunkDeadline !== null &&
        job.firstChunkDeadline <= now
      ) {
        const agent = this.#cancel(job, "deadline");
        const message = `agent ${agent?.id}: no first chunk within ${this.#config.firstChunkTimeoutMs} ms`;
        log("warn", "first chunk timeout", { requestId: job.id, agentId: agent?.id });
        if (agent === null) continue;
        this.#retryOrFail(job, agent, "GATEWAY_TIMEOUT", message, "agent_failure", clock);
      } else if (job.phase === "streaming" && job.idleDeadline !== null && job.idleDeadline <= now) {
        const agent = this.#cancel(job, "deadline");
        log("warn", "stream idle timeout", { requestId: job.id, agentId: agent?.id });
        this.#settle(job, "agent_failure", clock);
        this.#fail(job, "GATEWAY_TIMEOUT", `no chunk within ${this.#config.idleChunkTimeoutMs} ms`);
      }
    }
    this.pump();
  }

  /** The next moment expire() has work: a deadline, or an open breaker turning half-open for queued work. */
  nextDeadline(now: number): number | null {
    let next: number | null = null;
    for (const job of this.#jobs.values()) {
      const at = job.nextDeadline();
      if (at !== null && (next === null || at < next)) next = at;
    }
    for (const agent of this.host.connections()) {
      for (const at of agent.releasing.values()) if (next === null || at < next) next = at;
    }
    if (this.queue.size > 0) {
      const halfOpen = this.#breakers.nextHalfOpenAt(now);
      if (halfOpen !== null && (next === null || halfOpen < next)) next = halfOpen;
    }
    return next;
  }

  callerGone(job: InferenceJob): void {
    if (job.phase === "finished") return;
    const agent = this.#cancel(job, "client_disconnected");
    log("info", "caller went away", { requestId: job.id, phase: job.phase, agentId: agent?.id });
    this.#settle(job, "neutral", this.host.now());
    job.abandon();
    this.#finish(job, "cancelled");
  }

  /** The caller does not read its stream: stop generating for it and end its stream. */
  #slowConsumer(job: InferenceJob): void {
    if (job.phase === "finished") return;
    const agent = this.#cancel(job, "slow_consumer");
    log("warn", "slow consumer", { requestId: job.id, agentId: agent?.id });
    this.#settle(job, "neutral", this.host.now());
    this.#fail(
      job,
      "SLOW_CONSUMER",
      `the caller did not read its stream; more than ${this.#config.streamBufferMaxBytes} bytes were waiting`,
    );
  }

  #send(job: InferenceJob, agent: AgentConnection): void {
    const now = this.host.now();
    job.phase = "dispatched";
    job.agent = agent;
    job.attempts += 1;
    job.triedAgents.add(agent.id);
    job.triedSessions.add(agent.sessionId);
    job.dispatchedAt = now;
    job.firstChunkDeadline = now + this.#config.firstChunkTimeoutMs;
    job.idleDeadline = null;
    job.ticket = this.#breakers.admit(agent.id, job.model, now);
    agent.requests.add(job.id);
    this.host.wakeAt(Math.min(job.firstChunkDeadline, job.requestDeadline));
    // On failure the host closes the agent, and agentLost() re-routes this job.
    this.host.send(agent, job.generateFrame(this.host.now()));
  }

  /**
   * A failure before the first chunk: another attempt, on another agent whenever one could take it
   * (the same agent only when no other serves the model), up to DISPATCH_MAX_ATTEMPTS in all.
   */
  #retryOrFail(
    job: InferenceJob,
    failed: AgentConnection,
    code: ErrorCode,
    message: string,
    outcome: AttemptOutcome,
    now: number,
  ): void {
    this.#settle(job, outcome, now);
    failed.requests.delete(job.id);
    job.agent = null;
    const attempts = this.#config.dispatchMaxAttempts;
    if (job.attempts >= attempts) {
      this.#fail(job, code, attempts > 1 ? `${message} (after ${job.attempts} attempts)` : message);
      return;
    }
    const exclusions = this.#exclusions(job, now);
    // A newer session of the same agent that has not said hello yet is a reconnect in progress.
    const successor = this.host.connection(failed.id);
    const reconnecting = successor !== undefined && successor !== failed && !successor.ready;
    if (!(reconnecting || hasCandidate(this.#ready(), job.model, exclusions.exist))) {
      this.#fail(job, code, message);
      return;
    }
    this.metrics.retries += 1;
    log("info", "retrying request", {
      requestId: job.id,
      failedAgent: failed.id,
      code,
      attempt: job.attempts + 1,
    });
    job.phase = "queued";
    const next = pickAgent(this.#ready(), job.model, exclusions.pick);
    if (next !== null) {
      this.#send(job, next);
      return;
    }
    job.requeue(now + this.#config.queueTimeoutMs);
    this.queue.pushFront(job);
    this.host.wakeAt(job.deadline);
  }

  /**
   * Agents a request must not go to now. `pick`: breakers that do not let it through (open, or
   * half-open with every probe slot taken), an agent still winding down this request, plus the
   * agents it already failed on while another agent serves the model. `exist`: open breakers and,
   * while another agent serves the model, the agents already tried (for "could anyone ever take it").
   */
  #exclusions(
    job: InferenceJob | null,
    now: number,
    model = job?.model ?? "",
  ): { pick: Set<string>; exist: Set<string> } {
    const open = new Set<string>();
    const blocked = new Set<string>();
    for (const agent of this.#ready()) {
      if (!agent.models.has(model)) continue;
      if (this.#breakers.isOpen(agent.id, model, now)) open.add(agent.id);
      if (!this.#breakers.allows(agent.id, model, now)) blocked.add(agent.id);
      // Still winding down this very request after a cancel: it would ignore a second `generate`
      // with the same id. It can take the request once it answered (pump() runs then).
      if (job !== null && agent.releasing.has(job.id)) blocked.add(agent.id);
    }
    if (job !== null && job.triedAgents.size > 0) {
      const avoid = new Set([...open, ...job.triedAgents]);
      if (hasCandidate(this.#ready(), model, avoid)) {
        for (const id of job.triedAgents) blocked.add(id);
        return { pick: blocked, exist: avoid };
      }
    }
    return { pick: blocked, exist: open };
  }

  /** The requested model if some agent can serve it, else its first servable fallback, else the error. */
  #servingModel(requested: string, now: number): string | Response {
    const availability = this.#availability(requested, now);
    if (availability === "servable") return requested;
    for (const fallback of this.#config.modelFallbacks.get(requested) ?? []) {
      if (this.#availability(fallback, now) === "servable") return fallback;
    }
    if (availability === "unknown") {
      this.#count("model_not_found");
      return errorResponse("MODEL_NOT_FOUND", `model "${requested}" is not served by this gateway`);
    }
    this.#count("no_agent");
    return errorResponse("NO_AGENT_AVAILABLE", `no connected agent can serve "${requested}"`, 1);
  }

  /** Busy agents count as serving (the request queues); open breakers and draining agents do not. */
  #availability(model: string, now: number) {
    const usable = this.#ready().filter((a) => !this.#breakers.isOpen(a.id, model, now));
    return modelAvailability(model, usable, this.host.knownModels());
  }

  /**
   * Sends `cancel` for the current attempt and detaches it from its agent, whose slot stays taken
   * until the agent answers (or CANCEL_ACK_GRACE_MS); returns that agent.
   */
  #cancel(job: InferenceJob, reason: CancelFrame["reason"]): AgentConnection | null {
    const agent = job.agent;
    if (agent === null) return null;
    // Detach first: a failed send closes the agent, and agentLost() must not re-route this job.
    agent.requests.delete(job.id);
    if (!agent.lost) this.#sendCancel(agent, job.id, reason);
    return agent;
  }

  #sendCancel(agent: AgentConnection, id: string, reason: CancelFrame["reason"]): void {
    const until = this.host.now() + CANCEL_ACK_GRACE_MS;
    agent.releasing.set(id, until);
    this.host.wakeAt(until);
    this.host.send(agent, { type: "cancel", id, reason });
  }

  /** The agent answered a cancelled request: its slot is free. */
  #released(agent: AgentConnection, id: string): void {
    if (agent.releasing.delete(id)) this.pump();
  }

  /** Reports the current attempt's outcome to its breakers (once). */
  #settle(job: InferenceJob, outcome: AttemptOutcome, now: number): void {
    if (job.ticket === null) return;
    this.#breakers.settle(job.ticket, outcome, now);
    job.ticket = null;
  }

  #fail(job: InferenceJob, code: ErrorCode, message: string): void {
    this.#settle(job, "neutral", this.host.now());
    job.fail(code, message, STATUS_BY_CODE[code]);
    this.#finish(
      job,
      code === "GATEWAY_TIMEOUT" ? "timeout" : code === "SLOW_CONSUMER" ? "slow_consumer" : "upstream_error",
    );
  }

  #finish(job: InferenceJob, outcome: RequestOutcome): void {
    if (job.phase === "finished") return;
    job.phase = "finished";
    this.#settle(job, "neutral", this.host.now());
    this.#jobs.delete(job.id);
    this.#remember(job.id);
    this.queue.remove(job);
    job.agent?.requests.delete(job.id);
    this.#count(outcome);
    this.pump();
  }

  /**
   * A chunk for a request this hub never knew (it restarted, or evicted, while the agent kept
   * generating): tell the agent to stop, once, so the orphan frees its slot.
   */
  #orphan(agent: AgentConnection, id: string): void {
    if (this.#jobs.has(id) || this.#recentIds.has(id)) return;
    this.#remember(id);
    log("info", "cancelling an orphaned generation", { requestId: id, agentId: agent.id });
    this.#sendCancel(agent, id, "hub_shutdown");
  }

  #remember(id: string): void {
    this.#recentIds.delete(id);
    this.#recentIds.add(id);
    if (this.#recentIds.size > RECENT_IDS) {
      const oldest = this.#recentIds.values().next().value;
      if (oldest !== undefined) this.#recentIds.delete(oldest);
    }
  }

  #ready(): AgentConnection[] {
    return [...this.host.connections()].filter((a) => a.ready);
  }

  #retryAfter(model: string, now: number): number {
    const usable = this.#ready().filter((a) => !this.#breakers.isOpen(a.id, model, now));
    return retryAfterSeconds({
      queued: this.queue.sizeFor(model),
      slots: slotsFor(usable, model),
      serviceTimeMs: this.#serviceTimeMs.get(model) ?? this.#poolServiceTimeMs,
    });
  }

  #defaultModel(now: number): string | undefined {
    if (this.#config.defaultModel !== undefined) return this.#config.defaultModel;
    const served = this.#ready()
      .filter((a) => !a.draining)
      .flatMap((a) => [...a.models].filter((m) => !this.#breakers.isOpen(a.id, m, now)))
      .sort();
    return served[0];
  }

  /** Request ids come from callers (X-Request-Id) and may repeat; frames need them unique. */
  #uniqueId(requestId: string): string {
    let id = requestId;
    for (let n = 2; this.#jobs.has(id); n++) id = `${requestId}.${n}`;
    return id;
  }

  /** The live job `id` if this very session owns it; late frames (after cancel, failover) are dropped. */
  #jobOf(agent: AgentConnection, id: string): InferenceJob | null {
    const job = this.#jobs.get(id);
    return job !== undefined && job.agent === agent && job.phase !== "finished" ? job : null;
  }

  #count(outcome: RequestOutcome): void {
    this.metrics.requests[outcome] += 1;
  }
}

/** A hub answer decided before anything streams (the Worker turns it into the public error). */
export function errorResponse(code: ErrorCode, message: string, retryAfterSeconds?: number): Response {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (retryAfterSeconds !== undefined) headers["Retry-After"] = String(retryAfterSeconds);
  return new Response(JSON.stringify({ code, message }), { status: STATUS_BY_CODE[code], headers });
}

/** Agent error codes as the caller sees them. */
function errorCodeFor(code: AgentErrorCode): ErrorCode {
  switch (code) {
    case "CONTEXT_OVERFLOW":
      return "CONTEXT_OVERFLOW";
    case "INVALID_REQUEST":
      return "INVALID_REQUEST";
    case "MODEL_NOT_FOUND":
      return "MODEL_NOT_FOUND";
    default:
      return "UPSTREAM_ERROR";
  }
}

/**
 * Which breaker an agent's error counts against: model trouble counts toward agent+model; a busy
 * or draining agent, a cancelled request and the caller's own mistakes say nothing about health.
 */
function breakerOutcomeFor(code: AgentErrorCode): AttemptOutcome {
  switch (code) {
    case "MODEL_LOAD_FAILED":
    case "ENGINE_ERROR":
    case "MODEL_NOT_FOUND":
      return "model_failure";
    default:
      return "neutral";
  }
}
