// What an AgentHub reads from and writes to the registry in D1: the routing table when it wakes,
// agent-local versions it sees announced, and the live traffic figures it rolls up every minute.
// Never called on the request path.
import { EMPTY_ROUTING_TABLE, type RoutingTable } from "../../schema/registry.ts";

/** An agent-local model some agent announced: `name` and its version (null when announced bare). */
export interface AnnouncedModel {
  name: string;
  version: string | null;
  /** The id the agent announced (`name` or `name:version`). */
  servedAs: string;
  /** The announcing agent, recorded in the registration event. */
  agentId: string;
}

/** One minute (or so) of live traffic of one version in one pool, as a hub measured it. */
export interface LiveMetricsWindow {
  /** Registry id `name:version`. */
  modelId: string;
  pool: string;
  windowStart: number;
  windowEnd: number;
  requests: number;
  errors: number;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  ttftP50Ms: number | null;
  tokensPerSecond: number | null;
}

/** The routing table as D1 holds it now (the registry's current revision). */
export async function loadRoutingTable(_db: D1Database, _now: number = Date.now()): Promise<RoutingTable> {
  return EMPTY_ROUTING_TABLE;
}

/**
 * Registers each announced model that the registry lacks as a version with source "agent-local"
 * (idempotent: a version already registered is left alone). Returns true when anything was added.
 */
export async function registerAgentLocalVersions(_db: D1Database, _models: readonly AnnouncedModel[]): Promise<boolean> {
  return false;
}

/** Appends live traffic windows to the versions' metric history (unknown versions are skipped). */
export async function recordLiveMetrics(_db: D1Database, _windows: readonly LiveMetricsWindow[]): Promise<void> {}
