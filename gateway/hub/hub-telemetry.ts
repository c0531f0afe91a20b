// What a pool's hub measures for /metrics, /performance/report, /alerts/active and the health
// score: the Prometheus counters and histograms (metrics/pool-telemetry.ts), the traffic windows
// (metrics/traffic-windows.ts), and what the alerts need to say since when: agents lost (kept
// AGENT_GONE_RETENTION_MS), models left without a usable agent, memory above the threshold. The
// gauges are read from the live pool when asked, never stored. Counters and open windows reach
// storage on the hub's flush cycle; closed minutes and hours once each; per-request events also
// go to Workers Analytics Engine when the ANALYTICS binding exists.
import type { ErrorCode } from "../../schema/api.ts";
import type { DispatchRequest, RequestOutcome } from "../../schema/hub.ts";
import type { ModelId } from "../../schema/model-id.ts";
import {
  AGENT_GONE_RETENTION_MS,
  type AgentTelemetry,
  BREAKER_STATE_VALUE,
  type BreakerTelemetry,
  MEMORY_PRESSURE_VALUE,
  type MetricFamily,
  type ModelServing,
  type PoolMonitoring,
  REPORT_WINDOWS,
  type ReportWindow,
  type Sample,
} from "../../schema/monitoring.ts";
import type { HealthFrame, HostFacts } from "../../schema/protocol.ts";
import type { RoutingTable } from "../../schema/registry.ts";
import { describeError, log } from "../log.ts";
import { PoolTelemetry, type RolloutLabels, type StructuredOutcome } from "../metrics/pool-telemetry.ts";
import { type Bucket, HOUR, MINUTE, TrafficWindows } from "../metrics/traffic-windows.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { BreakerStatus } from "./circuit-breakers.ts";
import type { InferenceJob } from "./inference-job.ts";

export const TELEMETRY_KEY = "telemetry";
/** The model label of requests for a model the pool does not know (404 MODEL_NOT_FOUND). */
export const UNKNOWN_MODEL_LABEL = "(unknown)";
export const WINDOWS_OPEN_KEY = "tw:open";
const MINUTE_KEY_PREFIX = "tw:m:";
const HOUR_KEY_PREFIX = "tw:h:";
/** A model no agent has served for this long is no longer reported as down. */
export const MODEL_GONE_RETENTION_MS = 24 * HOUR;

/** One structured-output request's end, as the Worker reports it (AgentHub.recordStructuredOutput). */
export interface StructuredOutputRecord {
  /** The model id that answered (model_name). */
  model: string;
  outcome: StructuredOutcome;
  /** Generations it took. */
  attempts: number;
}

/** What the telemetry reads from the live pool. */
export interface TelemetryView {
  pool: string;
  agents(): Iterable<AgentConnection>;
  breakers(now: number): BreakerStatus[];
  isOpen(agentId: string, model: ModelId, now: number): boolean;
  queueByModel(): Record<string, number>;
  routingTable(): RoutingTable;
}

interface LostAgent {
  id: string;
  name: string;
  pool: string;
  capacity: number;
  lostAt: number;
}

/** Memory in use, percent of physical memory, from a health frame's host facts. */
export function memoryUsedPercent(host: HostFacts): number | null {
  if (!(host.memoryTotalBytes > 0)) return null;
  const used = host.memoryUsedBytes ?? host.memoryTotalBytes - host.memoryFreeBytes;
  return Math.min(100, Math.max(0, (used / host.memoryTotalBytes) * 100));
}

export class HubTelemetry {
  readonly counters = new PoolTelemetry();
  readonly windows: TrafficWindows;
  readonly #lost = new Map<string, LostAgent>();
  readonly #memoryHighSince = new Map<string, number>();
  /** Served model id -> since when it has had no usable agent (null: it has one). */
  readonly #served = new Map<string, { unservedSince: number | null; lastSeen: number }>();
  #rolloutKinds: { table: RoutingTable | null; kinds: Map<string, string> } = {
    table: null,
    kinds: new Map(),
  };
  #restored = false;
  #flushedAt = 0;
  #analyticsFailures = 0;

  constructor(
    private readonly storage: DurableObjectStorage,
    private readonly memoryThresholdPercent: () => number,
    private readonly analytics: AnalyticsEngineDataset | undefined,
    /** Counters and open windows reach storage at least this often while they change (METRICS_FLUSH_MS). */
    private readonly flushMs: number,
    now: number,
  ) {
    this.windows = new TrafficWindows(now);
  }

  // ---- events ----

  finished(job: InferenceJob, outcome: RequestOutcome, view: TelemetryView, now: number): void {
    const usage = outcome === "ok" ? job.usage : null;
    const ttftMs = job.firstChunkAt === null ? null : job.firstChunkAt - job.createdAt;
    const record = {
      model: job.model,
      route: job.request.response.api,
      outcome,
      code: outcome === "ok" || outcome === "cancelled" ? null : (job.errorCode ?? "UPSTREAM_ERROR"),
      agent: job.servedBy,
      latencyMs: now - job.createdAt,
      ttftMs,
      queueWaitMs: job.firstDispatchedAt === null ? null : job.firstDispatchedAt - job.createdAt,
      promptTokens: usage?.promptTokens ?? 0,
      completionTokens: usage?.completionTokens ?? 0,
      rollout: this.#rolloutLabels(job, view),
    };
    this.counters.record(record);
    this.windows.record(
      {
        model: job.model,
        agent: job.servedBy,
        ok: outcome === "ok",
        code: record.code,
        latencyMs: record.latencyMs,
        ttftMs,
        promptTokens: record.promptTokens,
        completionTokens: record.completionTokens,
        generationMs: job.firstChunkAt === null ? 0 : now - job.firstChunkAt,
      },
      now,
    );
    this.#analytics(view.pool, record);
  }

  refused(
    request: DispatchRequest,
    outcome: RequestOutcome,
    code: ErrorCode,
    view: TelemetryView,
    now: number,
  ): void {
    // A name nobody serves is the caller's text: labelled as one value, or any caller could fill
    // the pool's bounded model labels (and the report) with names of its choosing.
    const model = outcome === "model_not_found" ? UNKNOWN_MODEL_LABEL : (request.model ?? "");
    const record = {
      model,
      route: request.response.api,
      outcome,
      code,
      agent: null,
      latencyMs: 0,
      ttftMs: null,
      queueWaitMs: null,
      promptTokens: 0,
      completionTokens: 0,
      rollout: null,
    };
    this.counters.record(record);
    this.windows.record(
      {
        model: record.model,
        agent: null,
        ok: false,
        code,
        latencyMs: 0,
        ttftMs: null,
        promptTokens: 0,
        completionTokens: 0,
        generationMs: 0,
      },
      now,
    );
    this.#analytics(view.pool, record);
  }

  agentReady(agentId: string): void {
    this.#lost.delete(agentId);
  }

  agentLost(agent: AgentConnection, now: number): void {
    this.#memoryHighSince.delete(agent.id);
    if (!agent.ready) return;
    this.#lost.set(agent.id, {
      id: agent.id,
      name: agent.caps?.name ?? agent.identity.name,
      pool: agent.identity.pool,
      capacity: agent.capacity,
      lostAt: now,
    });
    for (const model of agent.models) {
      const entry = this.#served.get(model);
      if (entry !== undefined) entry.lastSeen = now;
    }
  }

  health(agent: AgentConnection, frame: HealthFrame, now: number): void {
    const percent = memoryUsedPercent(frame.host);
    if (percent !== null && percent > this.memoryThresholdPercent()) {
      if (!this.#memoryHighSince.has(agent.id)) this.#memoryHighSince.set(agent.id, now);
    } else this.#memoryHighSince.delete(agent.id);
  }

  #rolloutLabels(job: InferenceJob, view: TelemetryView): RolloutLabels | null {
    const served = job.rollout;
    if (served === null || !served.counted) return null;
    const table = view.routingTable();
    if (this.#rolloutKinds.table !== table) {
      const kinds = new Map<string, string>();
      for (const routed of Object.values(table.models)) {
        if (routed.rollout !== null) kinds.set(routed.rollout.id, routed.rollout.kind);
      }
      this.#rolloutKinds = { table, kinds };
    }
    return { id: served.id, kind: this.#rolloutKinds.kinds.get(served.id) ?? "", arm: served.arm };
  }

  #analytics(
    pool: string,
    r: {
      model: string;
      route: string;
      outcome: string;
      code: string | null;
      agent: string | null;
      latencyMs: number;
      ttftMs: number | null;
      promptTokens: number;
      completionTokens: number;
    },
  ): void {
    if (this.analytics === undefined) return;
    try {
      // blobs: dimensions to group by; doubles: values to sum or take quantiles of; index: the
      // sampling key (one per model keeps a busy model from crowding out the others).
      this.analytics.writeDataPoint({
        indexes: [r.model.slice(0, 96)],
        blobs: [pool, r.model, r.route, r.outcome, r.code ?? "", r.agent ?? ""],
        doubles: [r.latencyMs, r.ttftMs ?? -1, r.promptTokens, r.completionTokens],
      });
    } catch (err) {
      // Once, then every 1,000th: a binding that fails fails for every request.
      if (this.#analyticsFailures++ % 1000 === 0) {
        log("warn", "analytics engine write failed", {
          failures: this.#analyticsFailures,
          ...describeError(err),
        });
      }
    }
  }

  // ---- views ----

  #agents(view: TelemetryView, now: number): AgentTelemetry[] {
    for (const [id, lost] of this.#lost)
      if (now - lost.lostAt > AGENT_GONE_RETENTION_MS) this.#lost.delete(id);
    const out: AgentTelemetry[] = [];
    const seen = new Set<string>();
    for (const agent of view.agents()) {
      if (!agent.ready) continue;
      seen.add(agent.id);
      const health = agent.lastHealth;
      const host = health?.frame.host ?? agent.caps?.host ?? null;
      out.push({
        id: agent.id,
        name: agent.caps?.name ?? agent.identity.name,
        pool: agent.identity.pool,
        up: true,
        lostAt: null,
        capacity: agent.capacity,
        inFlight: agent.requests.size,
        draining: agent.draining,
        tokensPerSecond: health?.frame.tokensPerSecond ?? null,
        memoryUsedPercent: host === null ? null : memoryUsedPercent(host),
        memoryPressure: host?.memoryPressure ?? null,
        cpuPercent: host?.cpuPercent ?? null,
        gpuPercent: host?.gpuPercent ?? null,
        memoryHighSince: this.#memoryHighSince.get(agent.id) ?? null,
        models: (agent.caps?.models ?? []).map((m) => ({
          id: m.name,
          loaded: m.loaded,
          footprintBytes: m.footprintBytes ?? null,
        })),
        lastHealthAt: health?.at ?? null,
      });
    }
    for (const lost of this.#lost.values()) {
      if (seen.has(lost.id)) continue;
      out.push({
        id: lost.id,
        name: lost.name,
        pool: lost.pool,
        up: false,
        lostAt: lost.lostAt,
        capacity: lost.capacity,
        inFlight: 0,
        draining: false,
        tokensPerSecond: null,
        memoryUsedPercent: null,
        memoryPressure: null,
        cpuPercent: null,
        gpuPercent: null,
        memoryHighSince: null,
        models: [],
        lastHealthAt: null,
      });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  #models(view: TelemetryView, now: number): ModelServing[] {
    const counts = new Map<string, { agents: number; usable: number }>();
    for (const agent of view.agents()) {
      if (!agent.ready || agent.draining) continue;
      for (const model of agent.models) {
        const c = counts.get(model) ?? { agents: 0, usable: 0 };
        c.agents += 1;
        if (!view.isOpen(agent.id, model, now)) c.usable += 1;
        counts.set(model, c);
      }
    }
    for (const [model, c] of counts) {
      const entry = this.#served.get(model) ?? { unservedSince: null, lastSeen: now };
      if (c.usable > 0) {
        entry.unservedSince = null;
        entry.lastSeen = now;
      } else entry.unservedSince ??= entry.lastSeen;
      this.#served.set(model, entry);
    }
    const out: ModelServing[] = [];
    for (const [model, entry] of this.#served) {
      const c = counts.get(model);
      if (c === undefined) {
        if (now - entry.lastSeen > MODEL_GONE_RETENTION_MS) {
          this.#served.delete(model);
          continue;
        }
        entry.unservedSince ??= entry.lastSeen;
      }
      out.push({
        id: model,
        agents: c?.agents ?? 0,
        usableAgents: c?.usable ?? 0,
        unservedSince: entry.unservedSince,
      });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  #breakers(view: TelemetryView, now: number): BreakerTelemetry[] {
    return view.breakers(now).map((b) => ({
      agentId: b.agentId,
      model: b.model,
      state: b.state,
      openedAt: b.openedAt,
    }));
  }

  /** The pool's families: counters and histograms, and gauges read from the live pool now. */
  families(view: TelemetryView, now: number): MetricFamily[] {
    const pool = view.pool;
    const gauge = (name: MetricFamily["name"], samples: Sample[]): MetricFamily => ({
      name,
      type: "gauge",
      samples,
    });
    const agents = this.#agents(view, now);
    const models = this.#models(view, now);
    const per = (pick: (a: AgentTelemetry) => number | null, onlyUp = true): Sample[] =>
      agents.flatMap((a) => {
        const value = onlyUp && !a.up ? null : pick(a);
        return value === null ? [] : [{ labels: { pool, agent: a.id }, value }];
      });
    const queue = view.queueByModel();
    return [
      ...this.counters.families(pool),
      gauge(
        "ml_inference_circuit_breaker_state",
        // Per agent always; per agent and model only while not closed: a pool of 50 agents with
        // 20 models would otherwise write 1,000 zeros per scrape (a missing series reads as closed).
        this.#breakers(view, now)
          .filter((b) => b.model === null || b.state !== "closed")
          .map((b) => ({
            labels: { pool, agent: b.agentId, model: b.model ?? "" },
            value: BREAKER_STATE_VALUE[b.state],
          })),
      ),
      gauge(
        "ml_inference_memory_usage_percent",
        per((a) => a.memoryUsedPercent),
      ),
      gauge(
        "ml_inference_cpu_usage_percent",
        per((a) => a.cpuPercent),
      ),
      gauge(
        "ml_inference_gpu_usage_percent",
        per((a) => a.gpuPercent),
      ),
      gauge(
        "ml_inference_memory_pressure",
        per((a) => (a.memoryPressure === null ? null : MEMORY_PRESSURE_VALUE[a.memoryPressure])),
      ),
      gauge(
        "ml_inference_agent_tokens_per_second",
        per((a) => a.tokensPerSecond),
      ),
      gauge(
        "ml_inference_agent_up",
        per((a) => (a.up ? 1 : 0), false),
      ),
      gauge(
        "ml_inference_agent_in_flight_requests",
        per((a) => a.inFlight),
      ),
      gauge(
        "ml_inference_agent_capacity",
        per((a) => a.capacity),
      ),
      gauge(
        "ml_inference_model_memory_bytes",
        agents.flatMap((a) =>
          a.models.flatMap((m) =>
            m.loaded && m.footprintBytes !== null
              ? [{ labels: { pool, agent: a.id, model: m.id }, value: m.footprintBytes }]
              : [],
          ),
        ),
      ),
      gauge("ml_inference_agents_connected", [
        { labels: { pool }, value: agents.filter((a) => a.up).length },
      ]),
      gauge(
        "ml_inference_model_agents",
        models.map((m) => {
          const [model, version] = this.counters.modelLabels(m.id);
          return { labels: { pool, model, version }, value: m.usableAgents };
        }),
      ),
      gauge(
        "ml_inference_queue_depth",
        Object.entries(queue).map(([model, n]) => ({
          labels: { pool, model: this.counters.modelLabels(model)[0] },
          value: n,
        })),
      ),
      gauge("ml_inference_in_flight_requests", [
        { labels: { pool }, value: agents.reduce((n, a) => n + (a.up ? a.inFlight : 0), 0) },
      ]),
    ];
  }

  /** What the report, the alerts and the health score read (only the windows asked for). */
  monitoring(
    view: TelemetryView,
    now: number,
    windows: readonly ReportWindow[] = REPORT_WINDOWS,
  ): PoolMonitoring {
    const empty = { byModel: {}, byAgent: {} };
    const out = Object.fromEntries(REPORT_WINDOWS.map((w) => [w, empty])) as PoolMonitoring["windows"];
    for (const w of windows) out[w] = windowJson(this.windows.window(w, now));
    return {
      pool: view.pool,
      at: now,
      agents: this.#agents(view, now),
      models: this.#models(view, now),
      breakers: this.#breakers(view, now),
      queueDepth: Object.values(view.queueByModel()).reduce((n, q) => n + q, 0),
      windows: out,
      recent: this.windows.recent(2 * MINUTE, now),
      series: windows.includes("1h") ? this.windows.series(now) : [],
    };
  }

  // ---- storage ----

  /** Reads counters and windows; a failure leaves the hub counting from zero and not writing over storage. */
  async restore(now: number): Promise<void> {
    try {
      const [counters, open, minutes, hours] = await Promise.all([
        this.storage.get(TELEMETRY_KEY),
        this.storage.get(WINDOWS_OPEN_KEY),
        this.storage.list({ prefix: MINUTE_KEY_PREFIX }),
        this.storage.list({ prefix: HOUR_KEY_PREFIX }),
      ]);
      if (counters !== undefined && !this.counters.restore(counters)) {
        log("error", "stored telemetry is malformed; counting from zero");
      }
      this.windows.restore({ open, minutes: [...minutes.values()], hours: [...hours.values()] }, now);
      this.#restored = true;
      this.#flushedAt = now;
    } catch (err) {
      log("error", "telemetry restore failed; retried on the next flush", describeError(err));
    }
  }

  get restored(): boolean {
    return this.#restored;
  }

  /** When the next flush is due (null: nothing to write). */
  nextDue(): number | null {
    return this.counters.dirty || this.windows.dirty ? this.#flushedAt + this.flushMs : null;
  }

  /** On the hub's alarm: writes what changed when a flush is due. */
  async flushIfDue(now: number): Promise<void> {
    if (now < this.#flushedAt + this.flushMs) return;
    if (!this.#restored) await this.restore(now);
    if (!this.#restored) return;
    this.#flushedAt = now;
    this.windows.advance(now);
    const puts: Record<string, unknown> = {};
    const deletes: string[] = [];
    if (this.counters.dirty) {
      this.counters.dirty = false;
      puts[TELEMETRY_KEY] = this.counters.toJSON();
    }
    const writes = this.windows.takeWrites();
    for (const b of writes.minutes) puts[MINUTE_KEY_PREFIX + b.start] = b.toJSON();
    for (const b of writes.hours) puts[HOUR_KEY_PREFIX + b.start] = b.toJSON();
    for (const t of writes.expiredMinutes) deletes.push(MINUTE_KEY_PREFIX + t);
    for (const t of writes.expiredHours) deletes.push(HOUR_KEY_PREFIX + t);
    if (this.windows.dirty || writes.minutes.length > 0) puts[WINDOWS_OPEN_KEY] = this.windows.openState();
    try {
      if (Object.keys(puts).length > 0) await this.storage.put(puts);
      if (deletes.length > 0) await this.storage.delete(deletes);
    } catch (err) {
      // The next flush writes the counters and open windows again; a closed minute is lost.
      this.counters.dirty = true;
      this.windows.dirty = true;
      log("error", "persisting telemetry failed", describeError(err));
    }
  }
}

function windowJson(bucket: Bucket): PoolMonitoring["windows"][ReportWindow] {
  const out = (m: Map<string, import("../metrics/traffic-windows.ts").Aggregate>) =>
    Object.fromEntries([...m].map(([k, a]) => [k, a.toJSON()]));
  return { byModel: out(bucket.byModel), byAgent: out(bucket.byAgent) };
}
