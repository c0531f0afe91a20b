// AgentHub: one Durable Object per pool. A thin shell over the pool's parts: agent sockets with
// the hibernation API (agent-sockets.ts), the hello handshake (handshake.ts), the request lifecycle
// (dispatcher.ts), breakers, counters and known models with their persistence (hub-storage.ts),
// and one alarm for whatever is due next (next-alarm.ts).
import { DurableObject } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { agents as agentsTable } from "../../schema/db.ts";
import { DEFAULT_POOL, HubHeader, type HubSnapshot, isDispatchRequest } from "../../schema/hub.ts";
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
import { type GatewayConfig, readConfig } from "../config.ts";
import { describeError, log } from "../log.ts";
import type { AgentCapabilities, AgentConnection } from "./agent-connection.ts";
import { AgentSockets, closeQuietly } from "./agent-sockets.ts";
import {
  type BreakerChange,
  type BreakerSelector,
  type BreakerStatus,
  CircuitBreakers,
} from "./circuit-breakers.ts";
import { Dispatcher, errorResponse } from "./dispatcher.ts";
import { answerHello } from "./handshake.ts";
import { HubCounters, METRICS_STORAGE_KEY } from "./hub-metrics.ts";
import { FLUSH_INTERVAL_MS, HubStorage } from "./hub-storage.ts";
import { KnownModels } from "./known-models.ts";
import { nextAlarm } from "./next-alarm.ts";

/** last_seen_at in D1 is refreshed at most this often per agent (on `hello` and `health`). */
const LAST_SEEN_WRITE_INTERVAL_MS = 60_000;
/** A failed restore is tried again after this long, doubling up to the maximum. */
const RESTORE_RETRY_MS = 1_000;
const RESTORE_RETRY_MAX_MS = 30_000;

export class AgentHub extends DurableObject<Env> {
  readonly #config: GatewayConfig;
  readonly #pool: string;
  readonly #sockets: AgentSockets;
  readonly #storage: HubStorage;
  readonly #dispatcher: Dispatcher;
  /** Per agent and agent+model; persisted so an eviction or redeploy does not forget a bad agent. */
  readonly #breakers: CircuitBreakers;
  readonly #counters = new HubCounters(() => this.#scheduleNextAlarm());
  readonly #knownModels = new KnownModels();
  /** The scheduled alarm as we last set it; null when none. */
  #alarmAt: number | null = null;
  #flushedAt = 0;
  /** False until stored state was read: counters are not written over what storage holds. */
  #restored = false;
  #restoreRetryAt: number | null = null;
  #restoreRetryMs = RESTORE_RETRY_MS;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#config = readConfig(env);
    this.#pool = ctx.id.name ?? DEFAULT_POOL;
    this.#sockets = new AgentSockets(ctx);
    this.#storage = new HubStorage(ctx.storage);
    this.#breakers = new CircuitBreakers(
      this.#config.breaker,
      (change) => {
        log("info", "circuit breaker changed", {
          key: change.key,
          state: change.record?.state,
          openedAt: change.record?.openedAt,
        });
        this.#persistBreakers([change]);
      },
      () => this.#scheduleNextAlarm(),
    );
    this.#dispatcher = new Dispatcher({
      config: this.#config,
      breakers: this.#breakers,
      counters: this.#counters,
      connections: () => this.#sockets.values(),
      connection: (agentId) => this.#sockets.get(agentId),
      knownModels: () => this.#knownModels,
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
      for (const model of agent.models) models.set(model, this.#knownModels.firstSeenAt(model) ?? now);
    }
    return {
      pool: this.#pool,
      agents: [...this.#sockets.values()].map((a) => a.summary(this.#breakers.agentState(a.id, now))),
      models: [...models]
        .map(([id, firstSeenAt]) => ({ id, firstSeenAt }))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
      queue: { total: this.#dispatcher.queue.size, byModel: this.#dispatcher.queue.countsByModel() },
      metrics: this.#counters.snapshot(),
    };
  }

  /** RPC: GET /circuit-breaker/status. */
  breakerStatus(): BreakerStatus[] {
    return this.#breakers.status(Date.now());
  }

  /** RPC: POST /circuit-breaker/reset; null when the selector names no existing breaker. */
  resetBreakers(selector: BreakerSelector): { reset: number } | null {
    const reset = this.#breakers.reset(selector, Date.now());
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
    const sockets = this.ctx.getWebSockets(agentId);
    for (const ws of sockets) closeQuietly(ws, code, reason);
    if (agent) this.#closeAgent(agent, code, reason);
    return agent !== undefined || sockets.length > 0;
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
    return this.#dispatcher.submit(body, request.signal);
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
    if (!this.#restored && this.#restoreRetryAt !== null && this.#restoreRetryAt <= Date.now()) {
      await this.#loadStoredState();
    }
    this.runChecks(Date.now());
  }

  /**
   * The periodic work an alarm does — hello, heartbeat and token deadlines, request deadlines, the
   * flush of buffered counts — as if the clock read `now`. Public so tests can run it at a chosen
   * time (runInDurableObject).
   */
  runChecks(now: number): void {
    try {
      for (const agent of [...this.#sockets.values()]) {
        const expiresAt = agent.identity.tokenExpiresAt;
        if (expiresAt !== null && expiresAt <= now) {
          this.#closeAgent(agent, CloseCode.UNAUTHORIZED, "token expired");
        } else if (!agent.ready) {
          if (now - agent.identity.connectedAt >= this.#config.helloTimeoutMs) {
            this.#closeAgent(
              agent,
              CloseCode.HELLO_TIMEOUT,
              `no hello within ${this.#config.helloTimeoutMs} ms`,
            );
          }
        } else if (now - this.#lastActivity(agent) >= this.#config.heartbeatTimeoutMs) {
          this.#closeAgent(agent, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout");
        }
      }
      this.#dispatcher.expire(now);
      if (now >= this.#flushedAt + FLUSH_INTERVAL_MS) this.#flush(now);
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
    this.#knownModels.announce(agent.models, now);
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
        if (frame.models) this.#updateModels(agent, frame.models);
        if (now - agent.lastSeenWrittenAt >= LAST_SEEN_WRITE_INTERVAL_MS) this.#touchLastSeen(agent, now);
        return;
      }
      case "loaded": {
        const models = agent.caps?.models.filter((m) => m.name !== frame.model.name) ?? [];
        this.#updateModels(agent, [...models, frame.model]);
        return;
      }
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
    this.#sockets.forget(agent);
    this.#dispatcher.agentLost(agent, reason);
    this.#scheduleNextAlarm();
  }

  #updateModels(agent: AgentConnection, models: AgentCapabilities["models"]): void {
    agent.setModels(models);
    this.#sockets.persist(agent);
    this.#knownModels.announce(agent.models, Date.now());
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

  // ---- storage ----

  /** Buffered counts to storage: breaker counts, request counters (once restored), known models. */
  #flush(now: number): void {
    this.#flushedAt = now;
    this.#persistBreakers(this.#breakers.flush(now, (agentId) => this.#sockets.has(agentId)));
    const models = this.#knownModels.flush(now);
    if (Object.keys(models.puts).length > 0 || models.deletes.length > 0) {
      this.#storage.write(models.puts, models.deletes, "known models");
    }
    if (!this.#restored) return;
    const metrics = this.#counters.flush();
    if (metrics !== null) this.#storage.write({ [METRICS_STORAGE_KEY]: metrics }, [], "hub metrics");
  }

  #persistBreakers(changes: BreakerChange[]): void {
    const puts: Record<string, unknown> = {};
    const deletes: string[] = [];
    for (const change of changes) {
      if (change.record === null) deletes.push(change.key);
      else puts[change.key] = change.record;
    }
    this.#storage.write(puts, deletes, "circuit breakers");
  }

  /** A wake: the agents from their sockets, then what storage holds. Never throws. */
  async #restore(): Promise<void> {
    const now = Date.now();
    for (const ws of this.ctx.getWebSockets()) {
      try {
        const adopted = await this.#sockets.adopt(ws, now);
        if (adopted.agent === null) closeQuietly(ws, adopted.code, adopted.reason);
      } catch (err) {
        log("error", "an agent socket could not be restored", describeError(err));
      }
    }
    await this.#loadStoredState();
    this.#scheduleNextAlarm();
  }

  /** Reads breakers, counters and known models; on failure, tries again later on an alarm. */
  async #loadStoredState(): Promise<void> {
    try {
      const stored = await this.#storage.load();
      const now = Date.now();
      this.#alarmAt = stored.alarm;
      const restored = this.#breakers.restore(stored.breakers, now);
      if (restored > 0) log("info", "circuit breakers restored", { count: restored });
      this.#knownModels.restore(stored.knownModels, stored.legacyKnownModels, now);
      if (stored.legacyKnownModels !== undefined) this.#storage.dropLegacyKnownModels();
      this.#counters.restore(stored.metrics);
      this.#restored = true;
      this.#restoreRetryAt = null;
      this.#flushedAt = now;
    } catch (err) {
      this.#restoreRetryAt = Date.now() + this.#restoreRetryMs;
      log("error", "hub restore failed; serving without stored breakers and counters until it succeeds", {
        retryInMs: this.#restoreRetryMs,
        ...describeError(err),
      });
      this.#restoreRetryMs = Math.min(this.#restoreRetryMs * 2, RESTORE_RETRY_MAX_MS);
    }
  }

  // ---- alarms ----

  /** Makes sure an alarm fires no later than `at`. */
  #ensureAlarm(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  /** One alarm, at the earliest moment anything is due (next-alarm.ts); none when nothing is. */
  #scheduleNextAlarm(): void {
    const now = Date.now();
    const agents = [...this.#sockets.values()];
    const dirty = this.#breakers.dirty || this.#counters.dirty || this.#knownModels.dirty;
    const flushAt = dirty ? this.#flushedAt + FLUSH_INTERVAL_MS : null;
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
      flushAt: minOrNull(flushAt, this.#restoreRetryAt),
    });
    if (at !== null) this.#ensureAlarm(at);
  }
}

function minOrNull(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.min(a, b);
}
