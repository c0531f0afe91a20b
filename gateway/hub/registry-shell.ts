// The hub's side of the registry, as one part the AgentHub shell drives: the routing table it holds
// (routing-table.ts), placement (placement.ts) with the loads it sent and the failures it backs off
// from, agent-local registrations, and live per-version metrics rolled up into D1 (live-metrics.ts).
// D1 is touched only from alarms and waitUntil, never on the request path.

import type { z } from "zod";
import type { RequestOutcome } from "../../schema/hub.ts";
import type { GatewayFrame, LoadFailedFrame } from "../../schema/protocol.ts";
import type { PlacementEntry, RoutingTable } from "../../schema/registry.ts";
import { describeError, log } from "../log.ts";
import {
  loadRoutingTable,
  recordLiveMetrics,
  recordLoadFailure,
  registerAgentLocalVersions,
} from "../registry/hub-store.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { CircuitBreakers } from "./circuit-breakers.ts";
import type { InferenceJob } from "./inference-job.ts";
import { LiveMetrics } from "./live-metrics.ts";
import {
  desiredPlacement,
  LOAD_TIMEOUT_MS,
  type LoadFailure,
  loadKey,
  type ObservedAgent,
  placementShort,
  planPlacement,
  retryDelayMs,
} from "./placement.ts";
import { HubRoutingTable, unregisteredAnnouncements } from "./routing-table.ts";

/** A hub reloads its table from D1 when it has not been pushed or reloaded for this long. */
export const TABLE_REFRESH_MS = 60_000;
/** While placement is short of what the table wants (loads pending, no room yet), it looks again this often. */
export const PLACEMENT_RECHECK_MS = 5_000;

export interface RegistryShellHost {
  /** The pool's name now (read each time: a hub woken without a name learns it from storage). */
  pool(): string;
  db: D1Database;
  storage: DurableObjectStorage;
  breakers: CircuitBreakers;
  flushIntervalMs: number;
  agents(): Iterable<AgentConnection>;
  busyModels(agentId: string): Set<string>;
  send(agent: AgentConnection, frame: GatewayFrame): boolean;
  waitUntil(promise: Promise<unknown>): void;
  wakeAt(at: number): void;
  /** Agents' model lists changed (an unload was sent): let the dispatcher look again. */
  modelsChanged(agent: AgentConnection): void;
}

export class RegistryShell {
  readonly routing: HubRoutingTable;
  readonly live: LiveMetrics;
  readonly #pending = new Map<string, number>();
  readonly #failures = new Map<string, LoadFailure>();
  readonly #registrationTried = new Set<string>();
  #refreshing: Promise<void> | null = null;
  /** When placement should run again (hub clock): soon after a push, every few seconds while short. */
  #reconcileAt: number | null = null;

  constructor(private readonly host: RegistryShellHost) {
    this.routing = new HubRoutingTable(host.storage);
    this.live = new LiveMetrics(() => host.pool(), host.flushIntervalMs, Date.now());
  }

  get table(): RoutingTable {
    return this.routing.table;
  }

  /**
   * RPC applyRoutingTable: the Worker pushed a table. Placement runs on the alarm set for now, not
   * inside the RPC, so the Worker's push returns as soon as the table is held.
   */
  apply(table: RoutingTable, now: number): { revision: number } {
    if (this.routing.apply(table, now)) {
      log("info", "routing table applied", { pool: this.host.pool(), revision: table.revision });
    }
    this.#reconcileSoon(now);
    return { revision: this.routing.table.revision };
  }

  #reconcileSoon(at: number): void {
    this.#reconcileAt = this.#reconcileAt === null ? at : Math.min(this.#reconcileAt, at);
    this.host.wakeAt(this.#reconcileAt);
  }

  /** A request ended: counted for its version's live metrics. */
  finished(job: InferenceJob, outcome: RequestOutcome, now: number): void {
    const ttftMs =
      job.firstChunkAt !== null && job.dispatchedAt !== null ? job.firstChunkAt - job.dispatchedAt : null;
    this.live.record({
      modelId: job.model,
      ok: outcome === "ok",
      latencyMs: now - job.request.response.receivedAt,
      ttftMs,
      completionTokens: job.outputTokens,
      generationMs: job.firstChunkAt === null ? 0 : now - job.firstChunkAt,
    });
    const due = this.live.nextDue();
    if (due !== null) this.host.wakeAt(due);
  }

  /** Alarm work: reload a stale table, write due metric windows, retry placement. */
  async onAlarm(now: number): Promise<void> {
    if (now - this.routing.refreshedAt >= TABLE_REFRESH_MS) await this.refresh();
    const windows = this.live.take(now);
    if (windows.length > 0) {
      try {
        await recordLiveMetrics(this.host.db, windows);
      } catch (err) {
        this.live.putBack(windows);
        log("warn", "live metrics write failed; kept for the next alarm", {
          windows: windows.length,
          ...describeError(err),
        });
      }
    }
    this.reconcile(now);
  }

  /** When the next registry chore is due (hub clock), for the hub's one alarm. */
  nextDue(now: number): number | null {
    const times: number[] = [];
    const live = this.live.nextDue();
    if (live !== null) times.push(live);
    // A hub with agents keeps its table fresh; an idle one reloads it when it wakes.
    if ([...this.host.agents()].length > 0) times.push(this.routing.refreshedAt + TABLE_REFRESH_MS);
    for (const failure of this.#failures.values()) if (failure.retryAt > now) times.push(failure.retryAt);
    if (this.#reconcileAt !== null) times.push(this.#reconcileAt);
    // Never `now` itself: an alarm handler asking for its own time again gets no alarm (agent-hub.ts).
    return times.length === 0 ? null : Math.max(now + 1, Math.min(...times));
  }

  /** Reloads the table from D1 (one at a time); a failure keeps the held table. */
  refresh(): Promise<void> {
    this.#refreshing ??= loadRoutingTable(this.host.db)
      .then((table) => {
        if (this.routing.apply(table, Date.now())) {
          log("info", "routing table reloaded from D1", { pool: this.host.pool(), revision: table.revision });
        }
        this.reconcile(Date.now());
      })
      .catch((err: unknown) => log("warn", "routing table reload failed", describeError(err)))
      .finally(() => {
        this.#refreshing = null;
      });
    return this.#refreshing;
  }

  /** An agent announced models (hello, health, loaded): register the ones the registry lacks. */
  announced(agent: AgentConnection): void {
    const fresh = unregisteredAnnouncements(this.table, agent.models).filter(
      (m) => !this.#registrationTried.has(m.servedAs),
    );
    if (fresh.length === 0) return;
    for (const m of fresh) this.#registrationTried.add(m.servedAs);
    const work = registerAgentLocalVersions(
      this.host.db,
      fresh.map((m) => ({ ...m, agentId: agent.id })),
    )
      .then(() => this.refresh())
      .catch((err: unknown) => {
        for (const m of fresh) this.#registrationTried.delete(m.servedAs);
        log("warn", "agent-local registration failed", { agentId: agent.id, ...describeError(err) });
      });
    this.host.waitUntil(work);
  }

  loaded(agent: AgentConnection, servedAs: string, now: number): void {
    const key = loadKey(agent.id, servedAs);
    this.#pending.delete(key);
    this.#failures.delete(key);
    this.reconcile(now);
  }

  loadFailed(agent: AgentConnection, frame: z.infer<typeof LoadFailedFrame>, now: number): void {
    const key = loadKey(agent.id, frame.model);
    this.#pending.delete(key);
    const count = (this.#failures.get(key)?.count ?? 0) + 1;
    const retryAt = now + retryDelayMs(count);
    this.#failures.set(key, { count, retryAt, code: frame.code, message: frame.message, at: now });
    log("warn", "agent failed to load a model", {
      agentId: agent.id,
      model: frame.model,
      code: frame.code,
      failures: count,
      retryInMs: retryAt - now,
    });
    // A failed load counts against the agent+model breaker, like a failed request would.
    const model = frame.model as Parameters<CircuitBreakers["admit"]>[1];
    this.host.breakers.settle(this.host.breakers.admit(agent.id, model, now), "model_failure", now);
    this.host.waitUntil(
      recordLoadFailure(this.host.db, {
        modelId: frame.model,
        agentId: agent.id,
        code: frame.code,
        message: frame.message,
      }).catch((err: unknown) => log("warn", "load failure not recorded", describeError(err))),
    );
    this.host.wakeAt(retryAt);
  }

  agentLost(agent: AgentConnection, now: number): void {
    for (const key of [...this.#pending.keys()])
      if (key.startsWith(`${agent.id}\u0000`)) this.#pending.delete(key);
    this.reconcile(now);
  }

  /** Runs the reconciler once and carries out what it returns. */
  reconcile(now: number): void {
    this.#reconcileAt = null;
    this.#expirePending(now);
    const agents = [...this.host.agents()].filter((a) => a.ready);
    const observed: ObservedAgent[] = agents.map((a) => observe(a, this.host.busyModels(a.id)));
    const actions = planPlacement(this.table, {
      pool: this.host.pool(),
      now,
      agents: observed,
      pending: this.#pending,
      failures: this.#failures,
    });
    for (const action of actions) {
      const agent = agents.find((a) => a.id === action.agentId);
      if (!agent) continue;
      if (action.kind === "load") {
        const { version } = action;
        const frame: GatewayFrame = {
          type: "load",
          model: version.servedAs,
          source: version.source,
          parameters: version.parameters,
          ...(version.source.kind === "artifact" && version.sha256 !== null && version.size !== null
            ? {
                artifact: {
                  path: `/models/${action.modelId}/artifact`,
                  sha256: version.sha256,
                  size: version.size,
                  format: version.source.format,
                },
              }
            : {}),
        };
        log("info", "placement: load", { agentId: agent.id, model: action.modelId, reason: action.reason });
        if (this.host.send(agent, frame)) this.#pending.set(loadKey(agent.id, version.servedAs), now);
      } else {
        log("info", "placement: unload", {
          agentId: agent.id,
          model: action.servedAs,
          reason: action.reason,
        });
        if (this.host.send(agent, { type: "unload", model: action.servedAs })) {
          // No new request goes to it while the agent winds it down.
          agent.setModels((agent.caps?.models ?? []).filter((m) => m.name !== action.servedAs));
          this.host.modelsChanged(agent);
        }
      }
    }
    if (this.#placementShort(observed)) this.#reconcileSoon(now + PLACEMENT_RECHECK_MS);
  }

  #placementShort(observed: readonly ObservedAgent[]): boolean {
    return placementShort(desiredPlacement(this.table, this.host.pool()), observed);
  }

  /** A load the agent never answered within LOAD_TIMEOUT_MS is a failure: backed off, then retried. */
  #expirePending(now: number): void {
    for (const [key, sentAt] of this.#pending) {
      if (now - sentAt < LOAD_TIMEOUT_MS) continue;
      this.#pending.delete(key);
      const count = (this.#failures.get(key)?.count ?? 0) + 1;
      const message = `no answer to load within ${LOAD_TIMEOUT_MS} ms`;
      this.#failures.set(key, {
        count,
        retryAt: now + retryDelayMs(count),
        code: "LOAD_TIMEOUT",
        message,
        at: now,
      });
      const [agentId, model] = key.split("\u0000") as [string, string];
      log("warn", "placement: load timed out", { agentId, model, failures: count });
    }
  }

  /** RPC placementStatus: per served id, which agents hold it, are loading it, or failed to. */
  status(): Record<string, PlacementEntry> {
    const out: Record<string, PlacementEntry> = {};
    const entry = (servedAs: string) => {
      out[servedAs] ??= { loaded: [], loading: [], failed: [] };
      return out[servedAs];
    };
    const { wanted, warm } = desiredPlacement(this.table, this.host.pool());
    for (const w of wanted) entry(w.version.servedAs);
    for (const servedAs of warm) entry(servedAs);
    for (const servedAs of Object.keys(this.table.preparing)) entry(servedAs);
    for (const agent of this.host.agents()) {
      if (!agent.ready) continue;
      for (const model of agent.caps?.models ?? []) {
        if (model.loaded !== false && !agent.draining) entry(model.name).loaded.push(agent.id);
      }
    }
    for (const key of this.#pending.keys()) {
      const [agentId, servedAs] = key.split("\u0000") as [string, string];
      entry(servedAs).loading.push(agentId);
    }
    for (const [key, failure] of this.#failures) {
      const [agentId, servedAs] = key.split("\u0000") as [string, string];
      entry(servedAs).failed.push({ agentId, code: failure.code, message: failure.message, at: failure.at });
    }
    for (const e of Object.values(out)) e.loaded.sort();
    return out;
  }
}

function observe(agent: AgentConnection, busy: Set<string>): ObservedAgent {
  const health = agent.lastHealth?.frame;
  return {
    id: agent.id,
    usable: agent.ready && !agent.draining,
    artifacts: agent.caps?.capabilities.includes("artifacts") ?? false,
    loaded: new Set((agent.caps?.models ?? []).filter((m) => m.loaded !== false).map((m) => m.name)),
    busy,
    memoryFreeBytes: health?.host.memoryFreeBytes ?? agent.caps?.host.memoryFreeBytes ?? null,
    cached: new Set((health?.cache?.artifacts ?? []).map((a) => a.sha256)),
  };
}
