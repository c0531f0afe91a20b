// AgentHub: one Durable Object per pool. Holds the agents' sockets with the hibernation API,
// hands inference requests to the Dispatcher (dispatcher.ts), which streams chunks back to the
// Worker. Everything durable about a socket lives in its attachment; the rest is rebuilt on wake.
import { DurableObject } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { agents as agentsTable } from "../../schema/db.ts";
import {
  type AgentFrame,
  CloseCode,
  type GatewayFrame,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  type HelloFrame,
  PROTOCOL_VERSION,
  parseAgentFrame,
  type WelcomeFrame,
} from "../../schema/protocol.ts";
import { type GatewayConfig, readConfig } from "../config.ts";
import { describeError, log } from "../log.ts";
import {
  type AgentAttachment,
  type AgentCapabilities,
  AgentConnection,
  capsStorageKey,
} from "./agent-connection.ts";
import {
  BREAKER_KEY_PREFIX,
  type BreakerChange,
  type BreakerSelector,
  type BreakerStatus,
  CircuitBreakers,
} from "./circuit-breaker.ts";
import { DEFAULT_POOL, HubHeader, type HubSnapshot, isDispatchRequest } from "./dispatch.ts";
import { Dispatcher, errorResponse } from "./dispatcher.ts";

/** last_seen_at in D1 is refreshed at most this often per agent (on `hello` and `health`). */
const LAST_SEEN_WRITE_INTERVAL_MS = 60_000;
/** Breaker counts (not transitions, which are written at once) reach storage at least this often. */
const BREAKER_FLUSH_INTERVAL_MS = 10_000;
const KNOWN_MODELS_KEY = "knownModels";

export class AgentHub extends DurableObject<Env> {
  readonly #config: GatewayConfig;
  /** Connected agents by agent id: at most one connection per id (newer supersedes older). */
  readonly #agents = new Map<string, AgentConnection>();
  readonly #dispatcher: Dispatcher;
  /** Per agent and agent+model; persisted so an eviction or redeploy does not forget a bad agent. */
  readonly #breakers: CircuitBreakers;
  /** Every model any agent of this pool ever announced, with when it was first seen. */
  #knownModels = new Map<string, number>();
  /** Sockets to their connection (see #agentFor); rebuilt lazily after a wake. */
  readonly #bySocket = new WeakMap<WebSocket, AgentConnection>();
  /** The scheduled alarm as we last set it; null when none. */
  #alarmAt: number | null = null;
  #breakersFlushedAt = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#config = readConfig(env);
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
      () => this.#ensureAlarm(this.#breakersFlushedAt + BREAKER_FLUSH_INTERVAL_MS),
    );
    this.#dispatcher = new Dispatcher({
      config: this.#config,
      breakers: this.#breakers,
      connections: () => this.#agents.values(),
      connection: (agentId) => this.#agents.get(agentId),
      knownModels: () => new Set(this.#knownModels.keys()),
      send: (agent, frame) => this.#sendFrame(agent, frame),
      wakeAt: (at) => this.#ensureAlarm(at),
      now: () => Date.now(),
    });
    // Heartbeats are answered by the runtime, so an idle pool can hibernate with agents connected.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
    // Runs once per wake (not per request). Errors are caught inside so the input gate is never
    // left broken: a hub without its model list still serves; it answers 503 instead of 404.
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
    const models = new Map<string, number>();
    for (const agent of this.#agents.values()) {
      if (!agent.ready || agent.draining) continue;
      for (const model of agent.models) models.set(model, this.#knownModels.get(model) ?? Date.now());
    }
    const now = Date.now();
    return {
      agents: [...this.#agents.values()].map((a) => a.summary(this.#breakers.agentState(a.id, now))),
      models: [...models]
        .map(([id, firstSeenAt]) => ({ id, firstSeenAt }))
        .sort((a, b) => (a.id < b.id ? -1 : 1)),
      queue: { total: this.#dispatcher.queue.size, byModel: this.#dispatcher.queue.countsByModel() },
      metrics: structuredClone(this.#dispatcher.metrics),
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
    const agent = this.#agents.get(agentId);
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

    // Older sockets of this agent (the tracked one, and any the table lost track of) give way.
    const previous = this.#agents.get(agentId);
    for (const older of this.ctx.getWebSockets(agentId)) {
      closeQuietly(older, CloseCode.SUPERSEDED, "superseded by a newer connection");
    }

    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [agentId]);
    const agent = new AgentConnection(
      server,
      {
        agentId,
        name: request.headers.get(HubHeader.agentName) || agentId,
        pool: request.headers.get(HubHeader.pool) || DEFAULT_POOL,
        sessionId: crypto.randomUUID(),
        connectedAt: now,
      },
      {},
      now,
    );
    this.#agents.set(agentId, agent);
    this.#persistAttachment(agent);
    this.#ensureAlarm(now + this.#config.helloTimeoutMs);
    log("info", "agent connected", { agentId, sessionId: agent.sessionId, supersedes: previous?.sessionId });
    // After the newer session is in the table, so the older one's unanswered requests wait for it.
    if (previous) this.#agentLost(previous, `agent ${agentId} reconnected`);
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
      this.#onMessage(ws, message);
    } catch (err) {
      log("error", "failed to handle agent frame", describeError(err));
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const agent = this.#agentFor(ws);
    if (agent) {
      log("info", "agent disconnected", { agentId: agent.id, code, reason });
      this.#agentLost(agent, `agent ${agent.id} disconnected`);
    }
    // Complete the closing handshake (a no-op when the runtime already replied).
    closeQuietly(ws, code === 1005 || code === 1006 ? 1000 : code, "closing");
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const agent = this.#agentFor(ws);
    if (agent) {
      log("warn", "agent socket error", { agentId: agent.id, ...describeError(error) });
      this.#agentLost(agent, `agent ${agent.id} connection failed`);
    }
  }

  override async alarm(): Promise<void> {
    this.#alarmAt = null;
    this.runChecks(Date.now());
  }

  /**
   * The periodic work an alarm does — hello and heartbeat deadlines, queue deadlines — as if the
   * clock read `now`. Public so tests can run it at a chosen time (runInDurableObject).
   */
  runChecks(now: number): void {
    try {
      for (const agent of [...this.#agents.values()]) {
        if (!agent.ready) {
          if (now - agent.identity.connectedAt >= this.#config.helloTimeoutMs) {
            this.#closeAgent(
              agent,
              CloseCode.HELLO_TIMEOUT,
              `no hello within ${this.#config.helloTimeoutMs} ms`,
            );
          }
        } else if (now - this.#lastActivity(agent) > this.#config.heartbeatTimeoutMs) {
          this.#closeAgent(agent, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout");
        }
      }
      this.#dispatcher.expire(now);
      this.#flushBreakers(now);
    } catch (err) {
      log("error", "hub alarm failed", describeError(err));
    }
    this.#scheduleNextAlarm();
  }

  #onMessage(ws: WebSocket, message: string | ArrayBuffer): void {
    const agent = this.#agentFor(ws);
    if (agent === null) {
      // A socket we already closed or replaced; its late frames mean nothing.
      closeQuietly(ws, CloseCode.SUPERSEDED, "superseded");
      return;
    }
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
    if (hello.protocol !== PROTOCOL_VERSION) {
      this.#closeAgent(
        agent,
        CloseCode.INCOMPATIBLE_VERSION,
        `protocol ${hello.protocol} unsupported; hub speaks ${PROTOCOL_VERSION}`,
      );
      return;
    }
    if (hello.agentId !== agent.id) {
      this.#closeAgent(agent, CloseCode.PROTOCOL_ERROR, "hello.agentId does not match the token subject");
      return;
    }
    const now = Date.now();
    agent.applyHello(hello, now);
    this.#persistAttachment(agent);
    this.#rememberModels(agent.models);
    const welcome: WelcomeFrame = {
      type: "welcome",
      protocol: PROTOCOL_VERSION,
      agentId: agent.id,
      sessionId: agent.sessionId,
      pool: agent.identity.pool,
      heartbeatIntervalMs: this.#config.heartbeatIntervalMs,
      healthIntervalMs: this.#config.healthIntervalMs,
    };
    if (!this.#sendFrame(agent, welcome)) return;
    log("info", "agent ready", { agentId: agent.id, models: [...agent.models], capacity: agent.capacity });
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
        this.#persistAttachment(agent);
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

  /**
   * The live connection a socket belongs to, or null (closed, superseded). Every frame asks, so the
   * answer is remembered per socket object: deserializing the attachment each time cost ~4% of the
   * hub's CPU (bench --profile). A remembered connection counts only while it is still the agent's.
   */
  #agentFor(ws: WebSocket): AgentConnection | null {
    const known = this.#bySocket.get(ws);
    if (known !== undefined && this.#agents.get(known.id) === known) return known;
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment === null) return null;
    const agent = this.#agents.get(attachment.agentId);
    if (agent === undefined || agent.sessionId !== attachment.sessionId) return null;
    this.#bySocket.set(ws, agent);
    return agent;
  }

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
    this.#agentLost(agent, `agent ${agent.id} connection closed (${reason})`);
  }

  /** Forgets an agent; its requests fail over (before the first chunk) or end with an error event. */
  #agentLost(agent: AgentConnection, reason: string): void {
    if (agent.lost) return;
    agent.lost = true;
    if (this.#agents.get(agent.id) === agent) this.#agents.delete(agent.id);
    if (agent.capsInStorage) void this.ctx.storage.delete(capsStorageKey(agent.sessionId));
    this.#dispatcher.agentLost(agent, reason);
    this.#scheduleNextAlarm();
  }

  #updateModels(agent: AgentConnection, models: AgentCapabilities["models"]): void {
    agent.setModels(models);
    this.#persistAttachment(agent);
    this.#rememberModels(agent.models);
    this.#dispatcher.pump();
  }

  #persistAttachment(agent: AgentConnection): void {
    const attachment = agent.attachment();
    try {
      agent.ws.serializeAttachment(attachment);
      if (agent.capsInStorage) void this.ctx.storage.delete(capsStorageKey(agent.sessionId));
      agent.capsInStorage = false;
    } catch {
      // Over the 16 KiB attachment limit: keep identity on the socket, capabilities in storage.
      agent.ws.serializeAttachment({
        ...attachment,
        caps: null,
        capsInStorage: true,
      } satisfies AgentAttachment);
      void this.ctx.storage.put(capsStorageKey(agent.sessionId), attachment.caps);
      agent.capsInStorage = true;
    }
  }

  #rememberModels(models: Iterable<string>): void {
    const now = Date.now();
    let changed = false;
    for (const model of models) {
      if (this.#knownModels.has(model)) continue;
      this.#knownModels.set(model, now);
      changed = true;
    }
    if (changed) void this.ctx.storage.put(KNOWN_MODELS_KEY, Object.fromEntries(this.#knownModels));
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

  // ---- circuit breakers in storage ----

  /** Count changes since the last flush, and breakers no longer worth keeping, in one batch. */
  #flushBreakers(now: number): void {
    this.#breakersFlushedAt = now;
    this.#persistBreakers(this.#breakers.flush(now, (agentId) => this.#agents.has(agentId)));
  }

  #persistBreakers(changes: BreakerChange[]): void {
    const puts: Record<string, unknown> = {};
    const deletes: string[] = [];
    for (const change of changes) {
      if (change.record === null) deletes.push(change.key);
      else puts[change.key] = change.record;
    }
    const writes: Promise<unknown>[] = [];
    // put() and delete() take at most 128 keys per call.
    const entries = Object.entries(puts);
    for (let i = 0; i < entries.length; i += 128) {
      writes.push(this.ctx.storage.put(Object.fromEntries(entries.slice(i, i + 128))));
    }
    for (let i = 0; i < deletes.length; i += 128)
      writes.push(this.ctx.storage.delete(deletes.slice(i, i + 128)));
    for (const write of writes) {
      write.catch((err: unknown) => log("error", "persisting circuit breakers failed", describeError(err)));
    }
  }

  // ---- wake-up and alarms ----

  async #restore(): Promise<void> {
    try {
      const [known, alarm, breakers] = await Promise.all([
        this.ctx.storage.get<Record<string, number>>(KNOWN_MODELS_KEY),
        this.ctx.storage.getAlarm(),
        this.ctx.storage.list({ prefix: BREAKER_KEY_PREFIX }),
      ]);
      this.#knownModels = new Map(Object.entries(known ?? {}));
      this.#alarmAt = alarm;
      const now = Date.now();
      this.#breakersFlushedAt = now;
      const restored = this.#breakers.restore(breakers.values(), now);
      if (restored > 0) log("info", "circuit breakers restored", { count: restored });
      for (const ws of this.ctx.getWebSockets()) {
        const attachment = ws.deserializeAttachment() as AgentAttachment | null;
        if (attachment === null) continue;
        const current = this.#agents.get(attachment.agentId);
        if (current && current.identity.connectedAt >= attachment.connectedAt) {
          closeQuietly(ws, CloseCode.SUPERSEDED, "superseded");
          continue;
        }
        if (current) closeQuietly(current.ws, CloseCode.SUPERSEDED, "superseded");
        const caps = attachment.capsInStorage
          ? ((await this.ctx.storage.get<AgentCapabilities>(capsStorageKey(attachment.sessionId))) ?? null)
          : attachment.caps;
        const { agentId, name, pool, sessionId, connectedAt, draining, capsInStorage } = attachment;
        const identity = { agentId, name, pool, sessionId, connectedAt };
        this.#agents.set(agentId, new AgentConnection(ws, identity, { caps, draining, capsInStorage }, now));
      }
    } catch (err) {
      log("error", "hub restore failed", describeError(err));
    }
  }

  /** Makes sure an alarm fires no later than `at`. */
  #ensureAlarm(at: number): void {
    if (this.#alarmAt !== null && this.#alarmAt <= at) return;
    this.#alarmAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  /**
   * The next moment something is due: a hello deadline, a request deadline (queue, request, first
   * chunk, idle), an open breaker turning half-open while requests wait, a flush of breaker counts,
   * or — only while agents are connected — the next heartbeat check. One alarm, the earliest.
   */
  #scheduleNextAlarm(): void {
    const now = Date.now();
    const due: number[] = [];
    let anyReady = false;
    for (const agent of this.#agents.values()) {
      if (agent.ready) anyReady = true;
      else due.push(agent.identity.connectedAt + this.#config.helloTimeoutMs);
    }
    if (anyReady) due.push(now + this.#config.heartbeatIntervalMs);
    const requestDeadline = this.#dispatcher.nextDeadline(now);
    if (requestDeadline !== null) due.push(requestDeadline);
    if (this.#breakers.dirty) due.push(this.#breakersFlushedAt + BREAKER_FLUSH_INTERVAL_MS);
    if (due.length === 0) return;
    this.#ensureAlarm(Math.min(...due));
  }
}

/** Close reasons are limited to 123 bytes; closing an already-closed socket is not an error. */
function closeQuietly(ws: WebSocket, code: number, reason: string): void {
  try {
    ws.close(code, truncateUtf8(reason, 123));
  } catch {
    // Already closed or closing.
  }
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength <= maxBytes) return text;
  return new TextDecoder().decode(bytes.slice(0, maxBytes)).replace(/\uFFFD$/, "");
}
