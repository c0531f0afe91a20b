// The life of inference requests in one pool: admission (404/503/429), dispatch, the queue,
// failover before the first chunk, the limits an agent's output must keep, deadlines, completion,
// and cancellation when the caller goes. The decisions live in pure modules (model-resolution,
// agent-choice, deadlines, agent-errors, scheduling); this class is the state machine that applies
// them. It stays one file (~480 lines) on purpose: every transition ends in #settle/#fail/#finish,
// which report to the breakers and counters exactly once, and splitting the transitions across
// classes would let one of them skip that bookkeeping. No Durable Object APIs here: the AgentHub
// shell injects sockets, clocks and alarms (dispatcher-host.ts).

import type { ErrorCode } from "../../schema/api.ts";
import type { DispatchRequest, RequestOutcome } from "../../schema/hub.ts";
import { isModelId, type ModelId } from "../../schema/model-id.ts";
import type { ChunkFrame, DoneFrame, ErrorFrame } from "../../schema/protocol.ts";
import { CloseCode as Close } from "../../schema/protocol.ts";
import type { RoutingTable } from "../../schema/registry.ts";
import { EXPERIMENT_HEADER, VARIANT_HEADER } from "../../schema/rollouts.ts";
import { log } from "../log.ts";
import { outputPolicy } from "../security/config.ts";
import { outputBlockedMessage } from "../security/messages.ts";
import { AgentChoice } from "./agent-choice.ts";
import type { AgentConnection } from "./agent-connection.ts";
import { breakerOutcomeFor, PublicMessage, publicCodeFor, publicMessageFor } from "./agent-errors.ts";
import { Cancellations } from "./cancellations.ts";
import type { AttemptOutcome } from "./circuit-breaker.ts";
import type { CircuitBreakers } from "./circuit-breakers.ts";
import { overdue } from "./deadlines.ts";
import type { DispatcherConfig, DispatcherHost } from "./dispatcher-host.ts";
import { errorResponse } from "./hub-response.ts";
import { InferenceJob, outputLimitViolation, type ServedArm } from "./inference-job.ts";
import { resolveModel } from "./model-resolution.ts";
import { type RegistryRoute, type RolloutAssignment, rollingDrained, routeModel } from "./routing-table.ts";
import { ewma, modelAvailability, RequestQueue, slotsFor } from "./scheduling.ts";
import { ServiceTimes } from "./service-times.ts";

/** Where a request goes (Dispatcher #route): a model to queue it for, or why none can serve it. */
type Routed = {
  /** The rollout arm the request's end user is assigned to, when a rollout splits its model. */
  assignment: RolloutAssignment | null;
  /** The arm that serves it (the other one, uncounted, when the assigned one has no usable agent). */
  served: ServedArm | null;
  /** The assigned arm was passed over because every breaker for its version is open. */
  shed: boolean;
} & (
  | { ok: true; model: ModelId; requested: ModelId; deprecated: boolean }
  | { ok: false; code: ErrorCode; message: string; outcome: "model_not_found" | "no_agent" }
);

export class Dispatcher {
  readonly queue: RequestQueue<InferenceJob>;
  readonly #jobs = new Map<string, InferenceJob>();
  readonly #serviceTimes = new ServiceTimes();
  readonly #config: DispatcherConfig;
  readonly #breakers: CircuitBreakers;
  readonly #choice: AgentChoice;
  readonly #cancellations: Cancellations;
  /** The table rollingDrained() last ran on, and what it returned (once per table, not per request). */
  #drainedTable: RoutingTable | null = null;
  #drained = new Map<string, Set<string>>();
  /** The table the queued requests were last routed under (revision and build time compared). */
  #routedUnder: RoutingTable | null = null;
  /** Queued models re-routed since they became unservable: not again until served or the table changes. */
  readonly #rerouted = new Set<ModelId>();

  constructor(private readonly host: DispatcherHost) {
    this.#config = host.config;
    this.#breakers = host.breakers;
    this.queue = new RequestQueue(host.config.queueMax);
    this.#choice = new AgentChoice(
      host.breakers,
      () => this.#ready(),
      (model) => this.#drainedFrom(model),
    );
    this.#cancellations = new Cancellations({
      send: (agent, frame) => host.send(agent, frame),
      wakeAt: (at) => host.wakeAt(at),
      now: () => host.now(),
      isLive: (id) => this.#jobs.has(id),
    });
  }

  /**
   * Admits a request: an error Response when it cannot be served at all or the queue is full,
   * else the job's Response (resolved at the first chunk, or with an error before it).
   */
  submit(request: DispatchRequest, callerSignal: AbortSignal): Promise<Response> | Response {
    const now = this.host.now();
    const routed = this.#route(request, now);
    if (routed.assignment !== null) {
      if (routed.shed) this.host.rolloutShed(routed.assignment, request.subject);
      this.host.rolloutAssigned(routed.assignment, routed.served?.counted ?? false);
    }
    if (!routed.ok) {
      this.host.counters.outcome(routed.outcome, null);
      this.host.refused(request, routed.outcome, routed.code, now);
      const served = routed.served;
      return errorResponse(
        routed.code,
        routed.message,
        routed.code === "NO_AGENT_AVAILABLE" ? 1 : undefined,
        served === null ? undefined : { [VARIANT_HEADER]: served.label, [EXPERIMENT_HEADER]: served.id },
      );
    }
    const { model, requested } = routed;
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
        output: outputPolicy(this.#config.security, request.response.api),
      },
      {
        callerGone: (j) => this.callerGone(j),
        slowConsumer: (j) => this.#slowConsumer(j),
        outputBlocked: (j, filter) => this.#outputBlocked(j, filter),
      },
      now,
    );
    job.deprecated = routed.deprecated;
    job.rollout = routed.served;
    this.#jobs.set(job.id, job);
    if (job.isFallback) {
      this.host.counters.fallback();
      this.host.telemetry.fallback(model);
      log("info", "serving a fallback model", { requestId: job.id, requested, model });
    }
    // Only fires with the enable_request_signal compatibility flag: without it, a caller that
    // leaves while queued or before the first chunk is never noticed (measured in workerd).
    callerSignal.addEventListener("abort", () => this.callerGone(job));

    const agent = this.#choice.pick(model, job, now);
    if (agent !== null) {
      this.#send(job, agent);
    } else if (this.queue.push(job)) {
      this.host.wakeAt(job.deadline);
    } else {
      job.fail("QUEUE_FULL", `the queue for "${model}" is full`, this.#retryAfter(model, now));
      this.#finish(job, "queue_full");
    }
    return job.response;
  }

  /**
   * Where `request` goes now: the registry's route (a rollout's arm for its end user; the other
   * arm, uncounted, when the assigned one has no usable agent), then model resolution (the pool's
   * default, a versioned id agents announce, MODEL_FALLBACKS). No side effects: submit() counts the
   * assignment, and #reroute() calls it again for queued requests.
   */
  #route(request: DispatchRequest, now: number): Routed {
    const table = this.host.routingTable();
    const route: RegistryRoute =
      request.model === undefined
        ? { kind: "unregistered" }
        : routeModel(table, request.model, request.subject);
    if (route.kind === "refused") {
      return {
        ok: false,
        code: route.code,
        message: route.message,
        outcome: "model_not_found",
        assignment: null,
        served: null,
        shed: false,
      };
    }
    const availability = (model: ModelId) =>
      modelAvailability(model, this.#choice.usable(model, now), this.host.knownModels());
    let target = route.kind === "routed" ? route.servedAs : request.model;
    const assignment = route.kind === "routed" ? route.rollout : null;
    let served: ServedArm | null = null;
    let shed = false;
    if (route.kind === "routed" && assignment !== null) {
      const { id, phase, arm, label, other } = assignment;
      served = { id, phase, arm, label, counted: true };
      const servable = (text: string) => isModelId(text) && availability(text) === "servable";
      // The assigned arm has no usable agent, the other has: serve that one, uncounted.
      if (!servable(route.servedAs) && servable(other.servedAs)) {
        target = other.servedAs;
        served = { id, phase, arm: other.arm, label: other.label, counted: false };
        // Its breakers shed it: that version has been failing. Uncounted, a canary failing every
        // request would stall behind its breaker short of the judge's minimum and never roll back.
        shed = isModelId(route.servedAs) && this.#choice.shedByBreakers(route.servedAs, now);
      }
    }
    const resolved = resolveModel(target, this.#config, {
      availability,
      servedModels: () => this.#servedModels(now),
    });
    // A substitute (MODEL_FALLBACKS) is not the arm's version: its answer is not the arm's either.
    if (served !== null && resolved.ok && resolved.model !== target) served = { ...served, counted: false };
    if (!resolved.ok) {
      return {
        ok: false,
        code: resolved.code,
        message: resolved.message,
        outcome: resolved.code === "MODEL_NOT_FOUND" ? "model_not_found" : "no_agent",
        assignment,
        served,
        shed,
      };
    }
    return {
      ok: true,
      model: resolved.model,
      requested: resolved.requested,
      deprecated: route.kind === "routed" && route.deprecated && resolved.model === route.servedAs,
      assignment,
      served,
      shed,
    };
  }

  onChunk(agent: AgentConnection, frame: ChunkFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) {
      this.#cancellations.orphan(agent, frame.id);
      return;
    }
    const violation = outputLimitViolation(job, frame.tokens, frame.text.length);
    if (violation !== null) {
      this.#limitExceeded(job, agent, violation);
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
    if (frame.usage.completionTokens > job.request.params.maxTokens) {
      this.#limitExceeded(
        job,
        agent,
        `done reports ${frame.usage.completionTokens} tokens for max_tokens ${job.request.params.maxTokens}`,
      );
      return;
    }
    const now = this.host.now();
    this.#serviceTimes.record(job.model, now - (job.dispatchedAt ?? now));
    this.host.counters.tokens(job.model, frame.usage.promptTokens, frame.usage.completionTokens);
    this.#settle(job, "success", now);
    job.done(frame);
    // An output filter may block what the agent held back until `done`: the job failed then.
    this.#finish(job, job.errorCode === null ? "ok" : "upstream_error");
  }

  onError(agent: AgentConnection, frame: ErrorFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) {
      this.#released(agent, frame.id);
      return;
    }
    const now = this.host.now();
    // The agent's own words stay with operators: the log line and GET /agents.
    log("warn", "agent answered an error", {
      requestId: job.id,
      agentId: agent.id,
      code: frame.code,
      message: frame.message.slice(0, 500),
      retryable: frame.retryable,
    });
    agent.recordError(job.id, frame.code, frame.message, now);
    if (frame.code === "DUPLICATE_REQUEST") this.#cancellations.duplicate(agent, job.id);
    const code = publicCodeFor(frame.code);
    const message = publicMessageFor(frame.code);
    const outcome = breakerOutcomeFor(frame.code);
    if (!job.started && frame.retryable) {
      this.#retryOrFail(job, agent, code, message, outcome, now);
    } else {
      this.#settle(job, outcome, now);
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
      log("info", "request lost its agent", {
        requestId: id,
        agentId: agent.id,
        reason,
        started: job.started,
      });
      if (job.started) {
        this.#settle(job, outcome, now);
        this.#fail(job, "UPSTREAM_ERROR", PublicMessage.agentLostMidStream);
      } else {
        this.#retryOrFail(job, agent, "UPSTREAM_ERROR", PublicMessage.agentLostBeforeAnswer, outcome, now);
      }
      outcome = "neutral";
    }
    this.pump();
  }

  /**
   * Dispatches queued requests to free agents, oldest first within each model, and the model whose
   * head has waited longest first: in insertion order, a hot model's queue would take every slot
   * freed on agents it shares with another model, whose requests then time out while queued.
   */
  pump(): void {
    const now = this.host.now();
    const table = this.host.routingTable();
    const routedUnder = this.#routedUnder;
    if (
      routedUnder === null ||
      table.revision !== routedUnder.revision ||
      table.builtAt !== routedUnder.builtAt
    ) {
      // A new table (a rollout's step, a switch, a rollback): queued requests go where it says now.
      this.#routedUnder = table;
      this.#rerouted.clear();
      this.#reroute(this.queue.models(), "routing table changed", now);
    }
    for (const model of this.#rerouted) if (this.queue.sizeFor(model) === 0) this.#rerouted.delete(model);
    for (let again = true; again; ) {
      again = false;
      for (const model of this.queue.modelsByHead()) {
        for (const job of this.queue.itemsFor(model)) {
          const agent = this.#choice.pick(model, job, now);
          if (agent === null) {
            // Nobody free for this model at all: the rest of its queue waits too, unless nobody
            // could ever take it (its last agent left, was moved off it, or has its breaker open):
            // then it goes where a new request would (once per time the model becomes unservable).
            if (this.#choice.pick(model, null, now) === null) {
              if (this.#stranded(model, now) && this.#reroute([model], "no agent can serve it", now) > 0) {
                again = true;
              }
              break;
            }
            continue; // Only agents this request already failed on are free; let the next one go.
          }
          this.#rerouted.delete(model);
          // A nested pump (a failed send re-routes jobs) may have taken it already.
          if (this.queue.remove(job)) this.#send(job, agent);
        }
      }
    }
  }

  /** Whether queued `model` just became unservable (no usable agent serves it) and was not re-routed since. */
  #stranded(model: ModelId, now: number): boolean {
    if (this.#rerouted.has(model)) return false;
    const availability = modelAvailability(model, this.#choice.usable(model, now), this.host.knownModels());
    if (availability === "servable") return false;
    this.#rerouted.add(model);
    return true;
  }

  /**
   * Routes the queued requests of `models` again as submit() would now; those that another model
   * answers now move to its queue, keeping their place by deadline. One that now resolves to
   * nothing servable keeps waiting for its model (an agent may come back). Its rollout arm is the
   * one that serves it now, never counted: it was assigned (and counted as assigned) at admission,
   * and an answer by another version is not that arm's. Returns how many moved.
   */
  #reroute(models: Iterable<ModelId>, reason: string, now: number): number {
    let moved = 0;
    for (const model of [...models]) {
      for (const job of this.queue.itemsFor(model)) {
        const routed = this.#route(job.request, now);
        if (!routed.ok || routed.model === job.model) continue;
        const served = routed.served === null ? null : { ...routed.served, counted: false };
        const assigned = job.rollout;
        if (
          routed.shed &&
          routed.assignment !== null &&
          assigned?.counted === true &&
          assigned.id === routed.assignment.id &&
          assigned.phase === routed.assignment.phase &&
          assigned.arm === routed.assignment.arm
        ) {
          // Its arm's breakers shed it, as they would a new request: that arm's error.
          this.host.rolloutShed(routed.assignment, job.request.subject);
        }
        const wasFallback = job.isFallback;
        this.queue.remove(job);
        job.retarget({
          model: routed.model,
          requested: routed.requested,
          deprecated: routed.deprecated,
          rollout: served,
        });
        this.queue.insert(job);
        moved += 1;
        if (job.isFallback && !wasFallback) {
          this.host.counters.fallback();
          this.host.telemetry.fallback(job.model);
        }
        log("info", "queued request re-routed", {
          requestId: job.id,
          from: model,
          to: job.model,
          reason,
          variant: served?.label,
        });
      }
    }
    return moved;
  }

  /**
   * Ends what is overdue at `now`: queued requests past their queue or request deadline (504
   * QUEUE_TIMEOUT / GATEWAY_TIMEOUT), requests past their deadline (cancel `deadline`, 504 or an
   * error event), attempts without a first chunk in time (cancel, agent failure, failover), and
   * streams idle for too long (cancel, agent failure, error event).
   */
  expire(now: number): void {
    // Slots whose grace passed first: a queued request they can take now is sent, not timed out.
    if (this.#cancellations.expire(this.host.connections(), now)) this.pump();
    for (const job of this.queue.takeExpired(now)) {
      if (job.requestDeadline <= now) {
        this.#fail(job, "GATEWAY_TIMEOUT", PublicMessage.deadlineQueued);
      } else {
        job.fail(
          "QUEUE_TIMEOUT",
          `no agent became free for "${job.model}" within ${this.#config.queueTimeoutMs} ms`,
        );
        this.#finish(job, "queue_timeout");
      }
    }
    // Breakers count at the hub's own clock (the same as `now` in production; tests pass a later one).
    const clock = this.host.now();
    for (const job of [...this.#jobs.values()]) {
      const passed = overdue(job, now);
      if (passed === "request") {
        this.#cancel(job, "deadline");
        this.#settle(job, "neutral", clock);
        this.#fail(job, "GATEWAY_TIMEOUT", PublicMessage.deadline);
      } else if (passed === "first_chunk") {
        const agent = this.#cancel(job, "deadline");
        log("warn", "first chunk timeout", {
          requestId: job.id,
          agentId: agent?.id,
          timeoutMs: this.#config.firstChunkTimeoutMs,
        });
        if (agent === null) continue;
        agent.recordError(job.id, "FIRST_CHUNK_TIMEOUT", PublicMessage.firstChunkTimeout, clock);
        this.#retryOrFail(
          job,
          agent,
          "GATEWAY_TIMEOUT",
          PublicMessage.firstChunkTimeout,
          "agent_failure",
          clock,
        );
      } else if (passed === "idle") {
        const agent = this.#cancel(job, "deadline");
        log("warn", "stream idle timeout", { requestId: job.id, agentId: agent?.id });
        agent?.recordError(job.id, "IDLE_TIMEOUT", PublicMessage.idleTimeout, clock);
        this.#settle(job, "agent_failure", clock);
        this.#fail(job, "GATEWAY_TIMEOUT", PublicMessage.idleTimeout);
      }
    }
    this.pump();
  }

  /** The next moment expire() has work: a deadline, or an open breaker turning half-open for queued work. */
  nextDeadline(now: number): number | null {
    let next: number | null = this.#cancellations.nextDeadline(this.host.connections());
    for (const job of this.#jobs.values()) {
      const at = job.nextDeadline();
      if (at !== null && (next === null || at < next)) next = at;
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

  /** An output content filter blocked the answer: stop generating and end it with CONTENT_FILTERED. */
  #outputBlocked(job: InferenceJob, filter: string): void {
    if (job.phase === "finished") return;
    const agent = this.#cancel(job, "client_disconnected");
    log("warn", "answer blocked by a content filter", { requestId: job.id, agentId: agent?.id, filter });
    this.#settle(job, "neutral", this.host.now());
    this.#fail(job, "CONTENT_FILTERED", outputBlockedMessage(filter));
  }

  /**
   * The agent sent more than the request allows (tokens beyond max_tokens, or more text than
   * that many tokens can carry): a protocol violation. The request fails with a fixed message,
   * the agent's socket is closed, and its other requests fail over as on any disconnect. Nothing
   * more of its output is held: a rogue agent cannot grow the pool's memory.
   */
  #limitExceeded(job: InferenceJob, agent: AgentConnection, detail: string): void {
    const now = this.host.now();
    log("error", "agent exceeded a request's output limits", {
      requestId: job.id,
      agentId: agent.id,
      detail,
    });
    agent.recordError(job.id, "LIMIT_EXCEEDED", detail, now);
    agent.requests.delete(job.id);
    this.#settle(job, "agent_failure", now);
    this.#fail(job, "UPSTREAM_ERROR", PublicMessage.limitExceeded);
    this.host.close(agent, Close.LIMIT_EXCEEDED, "output beyond the request's limits");
  }

  #send(job: InferenceJob, agent: AgentConnection): void {
    const now = this.host.now();
    job.phase = "dispatched";
    job.agent = agent;
    job.attempts += 1;
    job.triedAgents.add(agent.id);
    job.triedSessions.add(agent.sessionId);
    job.dispatchedAt = now;
    job.firstDispatchedAt ??= now;
    job.servedBy = agent.id;
    job.firstChunkDeadline = now + this.#config.firstChunkTimeoutMs;
    job.idleDeadline = null;
    job.resetOutput();
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
    // A newer session of the same agent that has not said hello yet is a reconnect in progress.
    const successor = this.host.connection(failed.id);
    const reconnecting = successor !== undefined && successor !== failed && !successor.ready;
    if (!(reconnecting || this.#choice.anyCandidate(job.model, job, now))) {
      this.#fail(job, code, message);
      return;
    }
    this.host.counters.retry();
    this.host.telemetry.retry(job.model);
    log("info", "retrying request", {
      requestId: job.id,
      failedAgent: failed.id,
      code,
      attempt: job.attempts + 1,
    });
    job.phase = "queued";
    const next = this.#choice.pick(job.model, job, now);
    if (next !== null) {
      this.#send(job, next);
      return;
    }
    job.requeue(now + this.#config.queueTimeoutMs);
    this.queue.pushFront(job);
    this.host.wakeAt(job.deadline);
  }

  /**
   * Sends `cancel` for the current attempt and detaches it from its agent, whose slot stays taken
   * until the agent answers (or the grace passes); returns that agent.
   */
  #cancel(
    job: InferenceJob,
    reason: "client_disconnected" | "deadline" | "slow_consumer",
  ): AgentConnection | null {
    const agent = job.agent;
    if (agent === null) return null;
    // Detach first: a failed send closes the agent, and agentLost() must not re-route this job.
    agent.requests.delete(job.id);
    if (!agent.lost) this.#cancellations.cancel(agent, job.id, reason);
    return agent;
  }

  /** The agent answered a cancelled request: its slot is free. */
  #released(agent: AgentConnection, id: string): void {
    if (this.#cancellations.released(agent, id)) this.pump();
  }

  /** Reports the current attempt's outcome to its breakers (once). */
  #settle(job: InferenceJob, outcome: AttemptOutcome, now: number): void {
    if (job.ticket === null) return;
    this.#breakers.settle(job.ticket, outcome, now);
    job.ticket = null;
  }

  #fail(job: InferenceJob, code: ErrorCode, message: string): void {
    this.#settle(job, "neutral", this.host.now());
    job.fail(code, message);
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
    this.#cancellations.remember(job.id);
    this.queue.remove(job);
    job.agent?.requests.delete(job.id);
    this.host.counters.outcome(outcome, job.model);
    this.host.finished(job, outcome, this.host.now());
    this.pump();
  }

  /** Served ids with a request in flight on `agentId` (placement never unloads those). */
  busyModels(agentId: string): Set<string> {
    const busy = new Set<string>();
    for (const job of this.#jobs.values()) if (job.agent?.id === agentId) busy.add(job.model);
    return busy;
  }

  #ready(): AgentConnection[] {
    return [...this.host.connections()].filter((a) => a.ready);
  }

  #servedModels(now: number): ModelId[] {
    return this.#ready()
      .filter((a) => !a.draining)
      .flatMap((a) => [...a.models].filter((m) => !this.#breakers.isOpen(a.id, m, now)))
      .sort();
  }

  #retryAfter(model: ModelId, now: number): number {
    return this.#serviceTimes.retryAfter(
      model,
      this.queue.sizeFor(model),
      slotsFor(this.#choice.usable(model, now), model),
    );
  }

  /** Agents a rolling deployment moved off `model`: they take no new request for it. */
  #drainedFrom(model: ModelId): ReadonlySet<string> | undefined {
    const table = this.host.routingTable();
    if (table !== this.#drainedTable) {
      this.#drainedTable = table;
      this.#drained = rollingDrained(table);
    }
    return this.#drained.get(model);
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
}
