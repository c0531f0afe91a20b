// The life of inference requests in one pool: admission (404/503/429), dispatch to an agent,
// the queue, one retry before the first chunk, completion, and cancellation when the caller goes.
// No Durable Object APIs here: the AgentHub shell injects sockets, clocks and alarms.
import type { ErrorCode } from "../../schema/api.ts";
import type {
  AgentErrorCode,
  ChunkFrame,
  DoneFrame,
  ErrorFrame,
  GatewayFrame,
} from "../../schema/protocol.ts";
import { STATUS_BY_CODE } from "../errors.ts";
import { log } from "../log.ts";
import type { AgentConnection } from "./agent-connection.ts";
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

export interface DispatcherHost {
  queueMax: number;
  queueTimeoutMs: number;
  defaultModel: string | undefined;
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

export class Dispatcher {
  readonly metrics: HubMetrics = {
    requests: {
      ok: 0,
      upstream_error: 0,
      cancelled: 0,
      queue_full: 0,
      queue_timeout: 0,
      no_agent: 0,
      model_not_found: 0,
    },
    retries: 0,
    tokens: { prompt: 0, completion: 0 },
  };
  readonly queue: RequestQueue<InferenceJob>;
  readonly #jobs = new Map<string, InferenceJob>();
  /** Recent time from dispatch to `done` across the pool (for Retry-After). */
  #serviceTimeMs: number | null = null;

  constructor(private readonly host: DispatcherHost) {
    this.queue = new RequestQueue(host.queueMax);
  }

  /**
   * Admits a request: an error Response when it cannot be served at all or the queue is full,
   * else the job's Response (resolved at the first chunk, or with an error before it).
   */
  submit(request: DispatchRequest, callerSignal: AbortSignal): Promise<Response> | Response {
    const model = request.model ?? this.#defaultModel();
    if (model === undefined) {
      this.#count("no_agent");
      return errorResponse("NO_AGENT_AVAILABLE", "no agent serves any model", 1);
    }
    switch (modelAvailability(model, this.#ready(), this.host.knownModels())) {
      case "unknown":
        this.#count("model_not_found");
        return errorResponse("MODEL_NOT_FOUND", `model "${model}" is not served by this gateway`);
      case "unavailable":
        this.#count("no_agent");
        return errorResponse("NO_AGENT_AVAILABLE", `no connected agent serves "${model}"`, 1);
      case "servable":
        break;
    }

    const job = new InferenceJob(
      this.#uniqueId(request.requestId),
      model,
      request,
      this.host.now() + this.host.queueTimeoutMs,
      (j) => this.callerGone(j),
    );
    this.#jobs.set(job.id, job);
    // Only fires with the enable_request_signal compatibility flag: without it, a caller that
    // leaves while queued or before the first chunk is never noticed (measured in workerd).
    callerSignal.addEventListener("abort", () => this.callerGone(job));

    const agent = pickAgent(this.#ready(), model);
    if (agent !== null) {
      this.#send(job, agent);
    } else if (this.queue.push(job)) {
      this.host.wakeAt(job.deadline);
    } else {
      job.fail(
        "QUEUE_FULL",
        `the queue for "${model}" is full`,
        STATUS_BY_CODE.QUEUE_FULL,
        this.#retryAfter(model),
      );
      this.#finish(job, "queue_full");
    }
    return job.response;
  }

  onChunk(agent: AgentConnection, frame: ChunkFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) return;
    if (!job.started) {
      const now = this.host.now();
      job.firstChunkAt = now;
      agent.latencyMs = ewma(agent.latencyMs, now - (job.dispatchedAt ?? now));
    }
    job.chunk(frame, agent.id);
  }

  onDone(agent: AgentConnection, frame: DoneFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) return;
    const now = this.host.now();
    this.#serviceTimeMs = ewma(this.#serviceTimeMs, now - (job.dispatchedAt ?? now));
    this.metrics.tokens.prompt += frame.usage.promptTokens;
    this.metrics.tokens.completion += frame.usage.completionTokens;
    job.done(frame, agent.id);
    this.#finish(job, "ok");
  }

  onError(agent: AgentConnection, frame: ErrorFrame): void {
    const job = this.#jobOf(agent, frame.id);
    if (job === null) return;
    const code = errorCodeFor(frame.code);
    const message = `agent ${agent.id}: ${frame.code}: ${frame.message}`.slice(0, 500);
    if (!job.started && frame.retryable) this.#retryOrFail(job, agent, code, message);
    else this.#fail(job, code, message);
  }

  /** The agent's connection is gone: its requests fail over (before the first chunk) or end with an error. */
  agentLost(agent: AgentConnection, reason: string): void {
    for (const id of [...agent.requests]) {
      const job = this.#jobs.get(id);
      if (job === undefined) continue;
      if (job.started) this.#fail(job, "UPSTREAM_ERROR", `${reason} mid-stream`);
      else this.#retryOrFail(job, agent, "UPSTREAM_ERROR", `${reason} before answering`);
    }
    this.pump();
  }

  /** Dispatches queued requests to free agents, oldest first within each model. */
  pump(): void {
    for (const model of this.queue.models()) {
      for (const job of this.queue.itemsFor(model)) {
        const agent = pickAgent(this.#ready(), model, this.#excludedFor(job));
        if (agent === null) {
          if (pickAgent(this.#ready(), model) === null) break; // Nobody free for this model.
          continue; // Only agents this request already failed on are free; let the next one go.
        }
        // A nested pump (a failed send re-routes jobs) may have taken it already.
        if (this.queue.remove(job)) this.#send(job, agent);
      }
    }
  }

  /** Ends queued requests whose deadline passed with 504 QUEUE_TIMEOUT. */
  expire(now: number): void {
    for (const job of this.queue.takeExpired(now)) {
      job.fail(
        "QUEUE_TIMEOUT",
        `no agent became free for "${job.model}" within ${this.host.queueTimeoutMs} ms`,
        STATUS_BY_CODE.QUEUE_TIMEOUT,
      );
      this.#finish(job, "queue_timeout");
    }
  }

  callerGone(job: InferenceJob): void {
    if (job.phase === "finished") return;
    if (job.agent !== null && !job.agent.lost) {
      this.host.send(job.agent, { type: "cancel", id: job.id, reason: "client_disconnected" });
    }
    log("info", "caller went away", { requestId: job.id, phase: job.phase, agentId: job.agent?.id });
    job.abandon();
    this.#finish(job, "cancelled");
  }

  #send(job: InferenceJob, agent: AgentConnection): void {
    job.phase = "dispatched";
    job.agent = agent;
    job.attempts += 1;
    job.triedSessions.add(agent.sessionId);
    job.dispatchedAt = this.host.now();
    agent.requests.add(job.id);
    // On failure the host closes the agent, and agentLost() re-routes this job.
    this.host.send(agent, job.generateFrame());
  }

  /** A failure before the first chunk goes to another agent once, if another can ever take it. */
  #retryOrFail(job: InferenceJob, failed: AgentConnection, code: ErrorCode, message: string): void {
    failed.requests.delete(job.id);
    const exclude = this.#excludedFor(job);
    // A newer session of the same agent that has not said hello yet is a reconnect in progress.
    const successor = this.host.connection(failed.id);
    const reconnecting = successor !== undefined && successor !== failed && !successor.ready;
    if (job.attempts >= 2 || !(reconnecting || hasCandidate(this.#ready(), job.model, exclude))) {
      this.#fail(job, code, message);
      return;
    }
    this.metrics.retries += 1;
    log("info", "retrying request on another agent", { requestId: job.id, failedAgent: failed.id, code });
    job.phase = "queued";
    job.agent = null;
    const next = pickAgent(this.#ready(), job.model, exclude);
    if (next !== null) {
      this.#send(job, next);
      return;
    }
    job.deadline = this.host.now() + this.host.queueTimeoutMs;
    this.queue.pushFront(job);
    this.host.wakeAt(job.deadline);
  }

  #fail(job: InferenceJob, code: ErrorCode, message: string): void {
    job.fail(code, message, STATUS_BY_CODE[code]);
    this.#finish(job, "upstream_error");
  }

  #finish(job: InferenceJob, outcome: RequestOutcome): void {
    if (job.phase === "finished") return;
    job.phase = "finished";
    this.#jobs.delete(job.id);
    this.queue.remove(job);
    job.agent?.requests.delete(job.id);
    this.#count(outcome);
    this.pump();
  }

  #ready(): AgentConnection[] {
    return [...this.host.connections()].filter((a) => a.ready);
  }

  /** Agent ids whose current session this request already failed on. */
  #excludedFor(job: InferenceJob): Set<string> {
    const excluded = new Set<string>();
    for (const agent of this.host.connections()) {
      if (job.triedSessions.has(agent.sessionId)) excluded.add(agent.id);
    }
    return excluded;
  }

  #retryAfter(model: string): number {
    return retryAfterSeconds({
      queued: this.queue.sizeFor(model),
      slots: slotsFor(this.#ready(), model),
      serviceTimeMs: this.#serviceTimeMs,
    });
  }

  #defaultModel(): string | undefined {
    if (this.host.defaultModel !== undefined) return this.host.defaultModel;
    const served = this.#ready()
      .filter((a) => !a.draining)
      .flatMap((a) => [...a.models])
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
