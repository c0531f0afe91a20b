// AgentHub: one Durable Object per pool. A thin shell over the pool's parts: agent sockets with
// the hibernation API (agent-sockets.ts), the hello handshake (handshake.ts), liveness
// (liveness.ts), the request lifecycle (dispatcher.ts), breakers, counters and known models with
// their persistence (hub-state.ts), and one alarm for whatever is due next (next-alarm.ts).

import { DurableObject } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { agents as agentsTable } from "../../schema/db.ts";
import { DEFAULT_POOL, HubHeader, type HubSnapshot, isDispatchRequest } from "../../schema/hub.ts";
import type { MetricFamily, PoolMonitoring, ReportWindow } from "../../schema/monitoring.ts";
import {
  type AgentFrame,
  CloseCode,
  type GatewayFrame,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  type HelloFrame,
  parseAgentFrame,
  type WelcomeFrame,
} from "../../schema/protocol.ts";
import type { PlacementEntry, RoutingTable } from "../../schema/registry.ts";
import { type GatewayConfig, readConfig } from "../config.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import { HubRateLimits, type RateLimitAnswers, type RateLimitCommand } from "../ratelimit/hub-limits.ts";
import type { AgentCapabilities, AgentConnection } from "./agent-connection.ts";
import { AgentSockets, closeQuietly } from "./agent-sockets.ts";
import { enableBenchTrace } from "./bench-trace.ts";
import type { BreakerSelector, BreakerStatus } from "./circuit-breakers.ts";
import { Dispatcher } from "./dispatcher.ts";
import { answerHello } from "./handshake.ts";
import { errorResponse } from "./hub-response.ts";
import { HubState } from "./hub-state.ts";
import { rememberPoolName } from "./hub-storage.ts";
import { HubTelemetry, type StructuredOutputRecord, type TelemetryView } from "./hub-telemetry.ts";
import { livenessVerdict } from "./liveness.ts";
import { nextAlarm } from "./next-alarm.ts";
import { RegistryShell } from "./registry-shell.ts";
import { type FeedbackResult, HubRollouts } from "./rollout-shell.ts";
import type { RolloutStatsReport } from "./rollout-stats.ts";

/** Where the fleet's alert memory (alert key -> first seen) lives: in the default pool's hub. */
const ALERT_MEMORY_KEY = "alerts:memory";

/** last_seen_at in D1 is refreshed at most this often per agent (on `hello` and `health`). */
const LAST_SEEN_WRITE_INTERVAL_MS = 60_000;

export class AgentHub extends DurableObject<Env> {
  readonly #config: GatewayConfig;
  /**
   * The pool's name: from the id when the object was called by name; a wake by its alarm (or an
   * agent's message) has no name in the id (measured in workerd), so #restorePool() reads it from
   * storage before anything uses it.
   */
  #pool: string;
  /** False until the pool's name is read (and stored); a failed read is retried on an alarm. */
  #poolSettled = false;
  readonly #sockets: AgentSockets;
  readonly #dispatcher: Dispatcher;
  /** Breakers, counters, known models: what survives an eviction or a redeploy. */
  readonly #state: HubState;
  /** The registry's routing table, placement and live metrics (registry-shell.ts). */
  readonly #registry: RegistryShell;
  /** Per-arm statistics of the rollouts splitting this pool's traffic, and feedback (rollout-shell.ts). */
  readonly #rollouts: HubRollouts;
  /** What /metrics, the report and the alerts read (hub-telemetry.ts). */
  readonly #telemetry: HubTelemetry;
  readonly #view: TelemetryView;
  /** The rate limiter: at home in the default pool's hub; elsewhere, settlements (ratelimit/). */
  readonly #rateLimits: HubRateLimits;
  /** The scheduled alarm as we last set it; null when none. */
  #alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    enableBenchTrace(env);
    this.#config = readConfig(env);
    this.#pool = ctx.id.name ?? DEFAULT_POOL;
    this.#sockets = new AgentSockets(ctx);
    this.#state = new HubState(ctx.storage, this.#config.breaker, () => this.#scheduleNextAlarm());
    this.#registry = new RegistryShell({
      pool: () => this.#pool,
      db: env.DB,
      storage: ctx.storage,
      breakers: this.#state.breakers,
      flushIntervalMs: this.#config.liveMetricsFlushMs,
      agents: () => this.#sockets.values(),
      busyModels: (agentId) => this.#dispatcher.busyModels(agentId),
      send: (agent, frame) => this.#sendFrame(agent, frame),
      waitUntil: (promise) => ctx.waitUntil(promise),
      wakeAt: (at) => this.#ensureAlarm(at),
      modelsChanged: (agent) => {
        this.#sockets.persist(agent);
        this.#dispatcher.pump();
      },
    });
    this.#rollouts = new HubRollouts(
      ctx.storage,
      () => this.#registry.table,
      (at) => this.#ensureAlarm(at),
    );
    this.#telemetry = new HubTelemetry(
      ctx.storage,
      () => this.#config.alertThresholds.memoryPercent,
      env.ANALYTICS,
      this.#config.metricsFlushMs,
      Date.now(),
    );
    this.#view = {
      pool: "",
      agents: () => this.#sockets.values(),
      breakers: (now) => this.#state.breakers.status(now),
      isOpen: (agentId, model, now) => this.#state.breakers.isOpen(agentId, model, now),
      queueByModel: () => this.#dispatcher.queue.countsByModel(),
      routingTable: () => this.#registry.table,
    };
    Object.defineProperty(this.#view, "pool", { get: () => this.#pool });
    this.#rateLimits = new HubRateLimits({
      storage: ctx.storage,
      pool: () => this.#pool,
      home: () => poolHub(env, DEFAULT_POOL, this.#config.pools),
      requestTimeoutMs: this.#config.requestTimeoutMs,
      requestTimeoutMaxMs: this.#config.requestTimeoutMaxMs,
      wakeAt: (at) => this.#ensureAlarm(at),
      waitUntil: (promise) => ctx.waitUntil(promise),
    });
    this.#dispatcher = new Dispatcher({
      config: this.#config,
      telemetry: {
        retry: (model) => this.#telemetry.counters.retry(model),
        fallback: (model) => this.#telemetry.counters.fallback(model),
      },
      refused: (request, outcome, code, now) => {
        this.#telemetry.refused(request, outcome, code, this.#view, now);
      },
      breakers: this.#state.breakers,
      counters: this.#state.counters,
      connections: () => this.#sockets.values(),
      connection: (agentId) => this.#sockets.get(agentId),
      knownModels: () => this.#state.knownModels,
      routingTable: () => this.#registry.table,
      finished: (job, outcome, now) => {
        this.#telemetry.finished(job, outcome, this.#view, now);
        this.#registry.finished(job, outcome, now);
        this.#rollouts.finished(job, outcome, now);
        this.#rateLimits.finished(job, now);
      },
      rolloutAssigned: (assignment, counted) => this.#rollouts.assigned(assignment, counted, Date.now()),
      rolloutShed: (assignment, subject) => this.#rollouts.shed(assignment, subject, Date.now()),
      send: (agent, frame) => this.#sendFrame(agent, frame),
      close: (agent, code, reason) => this.#closeAgent(agent, code, reason),
      wakeAt: (at) => this.#ensureAlarm(at),
      now: () => Date.now(),
    });
    // Heartbeats are answered by the runtime, so an idle pool can hibernate with agents connected.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
    // Once per wake, not per request. #restore() never throws (a throw here would break the input
    // gate for good): a failed read is retried on an alarm, and the agents are adopted either way.
    void ctx.blockConcurrencyWhile(() => this.#restore());
  }

  // ---- Worker -> hub ----

  override async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    try {
      if (pathname === "/connect") return this.#connect(request);
      if (pathname === "/dispatch" && request.method === "POST") return await this.#dispatch(request);
      return errorResponse("NOT_FOUND", `no hub route ${request.method} ${pathname}`);
    } catch (err) {
      log("error", "hub request failed", { path: pathname, ...describeError(err) });
      return errorResponse("INTERNAL", "internal error");
    }
  }

  /** RPC: live view for GET /agents, /v1/models, /health and /ready. */
  snapshot(): HubSnapshot {
    const now = Date.now();
    const models = new Map<string, number>();
    for (const agent of this.#sockets.values()) {
      if (!agent.ready || agent.draining) continue;
      for (const model of agent.models) models.set(model, this.#state.knownModels.firstSeenAt(model) ?? now);
    }
    return {
      pool: this.#pool,
      agents: [...this.#sockets.values()].map((a) => a.summary(this.#state.breakers.agentState(a.id, now))),
      models: [...models]
        .map(([id, firstSeenAt]) => ({ id, firstSeenAt }))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
      queue: { total: this.#dispatcher.queue.size, byModel: this.#dispatcher.queue.countsByModel() },
      metrics: this.#state.counters.snapshot(),
    };
  }

  /**
   * RPC: the registry changed; `table` is its routing table now. A table older than the one held
   * is ignored. Placement runs at once (loads for a version being prepared are sent now).
   */
  applyRoutingTable(table: RoutingTable): { revision: number } {
    const applied = this.#registry.apply(table, Date.now());
    this.#dispatcher.pump();
    this.#scheduleNextAlarm();
    return applied;
  }

  /**
   * RPC: this pool's per-arm statistics of rollout `id`, by phase, with assignment counts (empty
   * when it saw none). The controller merges pools with ArmStats.fromJSON().merge().
   */
  rolloutStats(id: string): RolloutStatsReport {
    return this.#rollouts.report(id);
  }

  /**
   * RPC: POST /feedback for a request this pool answered: "forbidden" when another caller made it,
   * "duplicate" when it already has a score; a recorded score counts for the arm that served it.
   * `score` is in [0, 1] (the route validates; anything else throws).
   */
  recordFeedback(requestId: string, caller: string, score: number): FeedbackResult {
    return this.#rollouts.feedback(requestId, caller, score, Date.now());
  }

  /** RPC: per served model id, the agents of this pool that hold it, are loading it, or failed to. */
  placementStatus(): Record<string, PlacementEntry> {
    return this.#registry.status();
  }

  /**
   * RPC (the structured-output routes, in waitUntil): one structured request's end, counted for
   * ml_inference_structured_outputs_total and ml_inference_structured_output_attempts.
   */
  recordStructuredOutput(record: StructuredOutputRecord): void {
    const { model, outcome, attempts } = record;
    if (typeof model !== "string" || model.length > 256) return;
    if (outcome !== "valid" && outcome !== "invalid") return;
    if (!Number.isSafeInteger(attempts) || attempts < 1) return;
    this.#telemetry.counters.structured(model, outcome, attempts);
    this.#scheduleNextAlarm();
  }

  /** RPC: the pool's Prometheus families for GET /metrics (schema/monitoring.ts). */
  metricFamilies(): MetricFamily[] {
    return [...this.#telemetry.families(this.#view, Date.now()), ...this.#rateLimits.families()];
  }

  /** RPC: what GET /metrics needs in one call: the families and the 5 minutes the health score reads. */
  scrape(): { families: MetricFamily[]; monitoring: PoolMonitoring } {
    const now = Date.now();
    return {
      families: [...this.#telemetry.families(this.#view, now), ...this.#rateLimits.families()],
      monitoring: this.#telemetry.monitoring(this.#view, now, ["5m"]),
    };
  }

  /** RPC: the pool's traffic windows, agents, models and breakers for the report and the alerts. */
  monitoring(windows?: ReportWindow[]): PoolMonitoring {
    return this.#telemetry.monitoring(this.#view, Date.now(), windows);
  }

  /**
   * RPC (the default pool's hub keeps it for the fleet): the alerts' memory of when each condition
   * was first seen, so every isolate reports the same `since`. With an update: keys set (the
   * earliest time wins when two evaluations race) and cleared; returns the memory after it.
   */
  async alertMemory(
    update: { set: Record<string, number>; clear: string[] } | null,
  ): Promise<Record<string, number>> {
    const stored = (await this.ctx.storage.get<Record<string, number>>(ALERT_MEMORY_KEY)) ?? {};
    if (update === null) return stored;
    const next: Record<string, number> = { ...stored };
    for (const key of update.clear) delete next[key];
    for (const [key, at] of Object.entries(update.set)) {
      if (typeof at !== "number" || !Number.isFinite(at)) continue;
      next[key] = Math.min(at, next[key] ?? at);
    }
    await this.ctx.storage.put(ALERT_MEMORY_KEY, next);
    return next;
  }

  /** RPC (to the default pool's hub, the limiter's home): admissions, settlements, overrides. */
  rateLimit<C extends RateLimitCommand>(command: C): Promise<RateLimitAnswers[C["op"]]> {
    return this.#rateLimits.command(command, Date.now());
  }

  /** RPC: GET /circuit-breaker/status. */
  breakerStatus(): BreakerStatus[] {
    return this.#state.breakers.status(Date.now());
  }

  /** RPC: POST /circuit-breaker/reset; null when the selector names no existing breaker. */
  resetBreakers(selector: BreakerSelector): { reset: number } | null {
    const reset = this.#state.breakers.reset(selector, Date.now());
    if (reset === null) return null;
    log("info", "circuit breakers reset", { ...selector, reset });
    // Agents whose breakers were open can take queued work again.
    this.#dispatcher.pump();
    return { reset };
  }

  /**
   * RPC: closes an agent's live connection with `code` (REVOKED after an admin revoked it); its
   * requests fail over like on any disconnect. False when the agent is not connected to this pool.
   */
  disconnectAgent(agentId: string, code: CloseCode, reason: string): boolean {
    const agent = this.#sockets.get(agentId);
    // getWebSockets() still lists sockets whose close the peer has not answered: only open ones count.
    const open = this.ctx.getWebSockets(agentId).filter((ws) => ws.readyState === WebSocket.OPEN);
    for (const ws of open) closeQuietly(ws, code, reason);
    if (agent) this.#closeAgent(agent, code, reason);
    return agent !== undefined || open.length > 0;
  }

  #connect(request: Request): Response {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse("UPGRADE_REQUIRED", "expected a WebSocket upgrade");
    }
    const agentId = request.headers.get(HubHeader.agentId);
    if (!agentId) return errorResponse("INVALID_REQUEST", `missing ${HubHeader.agentId}`);
    const now = Date.now();
    const exp = Number(request.headers.get(HubHeader.tokenExp));
    const { agent, client, previous } = this.#sockets.accept(
      {
        agentId,
        name: request.headers.get(HubHeader.agentName) || agentId,
        pool: request.headers.get(HubHeader.pool) || this.#pool,
        sessionId: crypto.randomUUID(),
        connectedAt: now,
        tokenExpiresAt: Number.isFinite(exp) && exp > 0 ? exp * 1000 : null,
      },
      now,
    );
    this.#ensureAlarm(now + this.#config.helloTimeoutMs);
    log("info", "agent connected", { agentId, sessionId: agent.sessionId, supersedes: previous?.sessionId });
    // After the newer session is in the table, so the older one's unanswered requests wait for it.
    if (previous) this.#agentLost(previous, "reconnected");
    return new Response(null, { status: 101, webSocket: client });
  }

  async #dispatch(request: Request): Promise<Response> {
    const body: unknown = await request.json().catch(() => null);
    if (!isDispatchRequest(body)) return errorResponse("INVALID_REQUEST", "malformed dispatch request");
    return this.#rateLimits.dispatch(body, () => this.#dispatcher.submit(body, request.signal));
  }

  // ---- agent -> hub (hibernation handlers) ----

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    // Never throw from here: one agent's bad frame or our own bug must not affect anyone else.
    try {
      let agent = this.#sockets.of(ws);
      if (agent === null) {
        const adopted = await this.#sockets.adopt(ws, Date.now());
        if (adopted.agent === null) {
          closeQuietly(ws, adopted.code, adopted.reason);
          return;
        }
        agent = adopted.agent;
        log("warn", "adopted an agent socket the hub had lost track of", { agentId: agent.id });
      }
      this.#onMessage(agent, message);
    } catch (err) {
      log("error", "failed to handle agent frame", describeError(err));
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const agent = this.#sockets.of(ws);
    if (agent) {
      log("info", "agent disconnected", { agentId: agent.id, code, reason });
      this.#agentLost(agent, "disconnected");
    }
    // Complete the closing handshake (a no-op when the runtime already replied).
    closeQuietly(ws, code === 1005 || code === 1006 ? 1000 : code, "closing");
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const agent = this.#sockets.of(ws);
    if (agent) {
      log("warn", "agent socket error", { agentId: agent.id, ...describeError(error) });
      this.#agentLost(agent, "connection failed");
    }
  }

  override async alarm(): Promise<void> {
    this.#alarmAt = null;
    if (!this.#poolSettled) await this.#restorePool();
    if (this.#state.restoreDue(Date.now())) await this.#state.restore();
    if (this.#rollouts.restoreDue(Date.now())) await this.#rollouts.restore();
    if (this.#rateLimits.restoreDue(Date.now())) await this.#rateLimits.restore(Date.now());
    this.runChecks(Date.now());
    try {
      await this.#registry.onAlarm(Date.now());
    } catch (err) {
      log("error", "registry alarm work failed", describeError(err));
    }
    // A table reloaded from D1 (a push that never arrived) re-routes queued requests, as a push does.
    this.#dispatcher.pump();
    // Set the alarm afresh from what is due now. One set during this handler (runChecks) may name
    // this very alarm's time, and the runtime then clears it when the handler returns; a remembered
    // #alarmAt would keep every later wake-up from being scheduled.
    this.#alarmAt = null;
    this.#scheduleNextAlarm();
  }

  /**
   * The periodic work an alarm does — hello, heartbeat and token deadlines, request deadlines, the
   * flush of buffered counts — as if the clock read `now`. Public so tests can run it at a chosen
   * time (runInDurableObject).
   */
  runChecks(now: number): void {
    try {
      for (const agent of [...this.#sockets.values()]) {
        const verdict = livenessVerdict(
          {
            ready: agent.ready,
            connectedAt: agent.identity.connectedAt,
            tokenExpiresAt: agent.identity.tokenExpiresAt,
            lastActivity: this.#lastActivity(agent),
          },
          now,
          this.#config,
        );
        if (verdict !== null) this.#closeAgent(agent, verdict.code, verdict.reason);
      }
      this.#dispatcher.expire(now);
      this.#state.flushIfDue(now, (agentId) => this.#sockets.has(agentId));
      if (this.#telemetry.nextDue() !== null || !this.#telemetry.restored) {
        this.ctx.waitUntil(this.#telemetry.flushIfDue(now));
      }
      this.#rollouts.flushIfDue(now);
      this.#rateLimits.flushIfDue(now);
    } catch (err) {
      log("error", "hub alarm failed", describeError(err));
    }
    this.#scheduleNextAlarm();
  }

  #onMessage(agent: AgentConnection, message: string | ArrayBuffer): void {
    agent.lastFrameAt = Date.now();
    agent.framesReceived += 1;
    const parsed = parseAgentFrame(message);
    if (!parsed.ok) {
      this.#closeAgent(agent, CloseCode.PROTOCOL_ERROR, parsed.reason);
      return;
    }
    const frame = parsed.frame;
    if (!agent.ready) {
      if (frame.type === "hello") this.#onHello(agent, frame);
      else this.#closeAgent(agent, CloseCode.PROTOCOL_ERROR, `expected hello first, got ${frame.type}`);
      return;
    }
    this.#onAgentFrame(agent, frame);
  }

  #onHello(agent: AgentConnection, hello: HelloFrame): void {
    const decision = answerHello(hello, agent.id);
    if (!decision.accept) {
      this.#closeAgent(agent, decision.code, decision.reason);
      return;
    }
    const now = Date.now();
    agent.applyHello(hello, decision, now);
    this.#sockets.persist(agent);
    this.#state.announceModels(agent.models, now);
    const welcome: WelcomeFrame = {
      type: "welcome",
      protocol: decision.protocol,
      capabilities: decision.capabilities,
      agentId: agent.id,
      sessionId: agent.sessionId,
      pool: agent.identity.pool,
      heartbeatIntervalMs: this.#config.heartbeatIntervalMs,
      healthIntervalMs: this.#config.healthIntervalMs,
    };
    if (!this.#sendFrame(agent, welcome)) return;
    log("info", "agent ready", {
      agentId: agent.id,
      protocol: decision.protocol,
      capabilities: decision.capabilities,
      models: [...agent.models],
      capacity: agent.capacity,
    });
    this.#touchLastSeen(agent, now);
    this.#telemetry.agentReady(agent.id);
    this.#registry.announced(agent);
    this.#registry.reconcile(now);
    this.#scheduleNextAlarm();
    this.#dispatcher.pump();
  }

  #onAgentFrame(agent: AgentConnection, frame: AgentFrame): void {
    switch (frame.type) {
      case "hello":
        this.#closeAgent(agent, CloseCode.PROTOCOL_ERROR, "duplicate hello");
        return;
      case "health": {
        const now = Date.now();
        agent.lastHealth = { at: now, frame };
        this.#telemetry.health(agent, frame, now);
        if (frame.models) this.#updateModels(agent, frame.models);
        if (now - agent.lastSeenWrittenAt >= LAST_SEEN_WRITE_INTERVAL_MS) this.#touchLastSeen(agent, now);
        return;
      }
      case "loaded": {
        const models = agent.caps?.models.filter((m) => m.name !== frame.model.name) ?? [];
        this.#updateModels(agent, [...models, frame.model]);
        this.#registry.loaded(agent, frame.model.name, Date.now());
        return;
      }
      case "load_failed":
        this.#registry.loadFailed(agent, frame, Date.now());
        return;
      case "unloaded": {
        // Still listed (the agent can load it again on demand), but no longer resident.
        const models =
          agent.caps?.models.map((m) => (m.name === frame.model ? { ...m, loaded: false } : m)) ?? [];
        this.#updateModels(agent, models);
        return;
      }
      case "draining":
        agent.draining = true;
        this.#sockets.persist(agent);
        log("info", "agent draining", { agentId: agent.id, deadlineMs: frame.deadlineMs });
        return;
      case "chunk":
        this.#dispatcher.onChunk(agent, frame);
        return;
      case "done":
        this.#dispatcher.onDone(agent, frame);
        return;
      case "error":
        this.#dispatcher.onError(agent, frame);
        return;
    }
  }

  // ---- agents ----

  #sendFrame(agent: AgentConnection, frame: GatewayFrame): boolean {
    try {
      agent.ws.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      log("warn", "send to agent failed", { agentId: agent.id, ...describeError(err) });
      this.#closeAgent(agent, CloseCode.GOING_AWAY, "send failed");
      return false;
    }
  }

  #closeAgent(agent: AgentConnection, code: CloseCode, reason: string): void {
    log("warn", "closing agent socket", { agentId: agent.id, code, reason });
    closeQuietly(agent.ws, code, reason);
    this.#agentLost(agent, `connection closed (${reason})`);
  }

  /** Forgets an agent; its requests fail over (before the first chunk) or end with an error event. */
  #agentLost(agent: AgentConnection, reason: string): void {
    if (agent.lost) return;
    agent.lost = true;
    this.#telemetry.agentLost(agent, Date.now());
    this.#sockets.forget(agent);
    this.#dispatcher.agentLost(agent, reason);
    this.#registry.agentLost(agent, Date.now());
    this.#scheduleNextAlarm();
  }

  #updateModels(agent: AgentConnection, models: AgentCapabilities["models"]): void {
    agent.setModels(models);
    this.#sockets.persist(agent);
    this.#state.announceModels(agent.models, Date.now());
    this.#registry.announced(agent);
    this.#scheduleNextAlarm();
    this.#dispatcher.pump();
  }

  #touchLastSeen(agent: AgentConnection, now: number): void {
    agent.lastSeenWrittenAt = now;
    const write = drizzle(this.env.DB)
      .update(agentsTable)
      .set({ lastSeenAt: new Date(now) })
      .where(eq(agentsTable.id, agent.id))
      .run()
      .catch((err: unknown) =>
        log("warn", "last_seen_at update failed", { agentId: agent.id, ...describeError(err) }),
      );
    this.ctx.waitUntil(write);
  }

  /** Pings are answered by the runtime without waking us; their timestamp counts as activity. */
  #lastActivity(agent: AgentConnection): number {
    const pinged = this.ctx.getWebSocketAutoResponseTimestamp(agent.ws)?.getTime() ?? 0;
    return Math.max(agent.lastFrameAt, pinged);
  }

  // ---- wake-up and alarms ----

  /** A wake: the agents from their sockets, then what storage holds. Never throws. */
  async #restore(): Promise<void> {
    // First: placement, live metrics and logs name the pool.
    await this.#restorePool();
    const now = Date.now();
    for (const ws of this.ctx.getWebSockets()) {
      try {
        const adopted = await this.#sockets.adopt(ws, now);
        if (adopted.agent === null) closeQuietly(ws, adopted.code, adopted.reason);
      } catch (err) {
        log("error", "an agent socket could not be restored", describeError(err));
      }
    }
    try {
      await this.#registry.routing.restore();
    } catch (err) {
      log("warn", "stored routing table unreadable; reloading from D1", describeError(err));
    }
    await this.#rollouts.restore();
    await this.#telemetry.restore(Date.now());
    await this.#rateLimits.restore(Date.now());
    const storedAlarm = await this.#state.restore();
    if (storedAlarm !== null) this.#alarmAt = storedAlarm;
    this.#scheduleNextAlarm();
  }

  /** The pool's name from the id (kept in storage) or, when the id has none, from storage. Never throws. */
  async #restorePool(): Promise<void> {
    const fromId = this.ctx.id.name;
    try {
      const name = await rememberPoolName(this.ctx.storage, fromId);
      this.#poolSettled = true;
      if (name !== null) this.#pool = name;
      // A brand-new object woken without a name: should not happen; once per wake.
      else
        log("warn", "hub has no pool name (none in its id, none stored); using the default", {
          pool: this.#pool,
        });
    } catch (err) {
      log(fromId === undefined ? "error" : "warn", "pool name not read or stored; retried on an alarm", {
        pool: this.#pool,
        ...describeError(err),
      });
    }
  }

  /** Makes sure an alarm fires no later than `at`. */
  #ensureAlarm(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    this.ctx.storage.setAlarm(at).catch((err: unknown) => {
      // Not set (storage failed, or the object is being reset): forget it, so the next
      // scheduling sets it again instead of trusting an alarm that does not exist.
      if (this.#alarmAt === at) this.#alarmAt = null;
      log("warn", "hub: setting the alarm failed", { at, ...describeError(err) });
    });
  }

  /** One alarm, at the earliest moment anything is due (next-alarm.ts); none when nothing is. */
  #scheduleNextAlarm(): void {
    const now = Date.now();
    const agents = [...this.#sockets.values()];
    const at = nextAlarm({
      now,
      helloDeadlines: agents
        .filter((a) => !a.ready)
        .map((a) => a.identity.connectedAt + this.#config.helloTimeoutMs),
      lastActivity: agents.filter((a) => a.ready).map((a) => this.#lastActivity(a)),
      heartbeatTimeoutMs: this.#config.heartbeatTimeoutMs,
      tokenExpiries: agents.flatMap((a) =>
        a.identity.tokenExpiresAt === null ? [] : [a.identity.tokenExpiresAt],
      ),
      requestDeadline: this.#dispatcher.nextDeadline(now),
      flushAt: this.#state.nextDue(),
    });
    if (at !== null) this.#ensureAlarm(at);
    const registryAt = this.#registry.nextDue(now);
    if (registryAt !== null) this.#ensureAlarm(registryAt);
    const telemetryAt = this.#telemetry.nextDue();
    if (telemetryAt !== null) this.#ensureAlarm(telemetryAt);
    const rolloutsAt = this.#rollouts.nextDue(now);
    if (rolloutsAt !== null) this.#ensureAlarm(rolloutsAt);
    const rateLimitsAt = this.#rateLimits.nextDue();
    if (rateLimitsAt !== null) this.#ensureAlarm(rateLimitsAt);
  }
}
