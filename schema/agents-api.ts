// GET /agents (role admin): every pool's agents and counters in one body. Apart from schema/api.ts
// because it is made of the hubs' snapshot shapes (schema/hub.ts), which themselves use api.ts's
// codes and breaker states: importing hub.ts from api.ts would make the two modules a cycle.
import { z } from "zod";
import { AgentSummary, HubMetrics } from "./hub.ts";

/** What one pool's hub reports, or the sum over the pools. */
export const PoolSummary = z.object({
  /** Agents connected (ready or still before hello). */
  connected: z.number().int(),
  /** Agents that said hello. */
  ready: z.number().int(),
  /** Models served now (sorted). */
  models: z.array(z.string()),
  queue: z.object({ total: z.number().int(), byModel: z.record(z.string(), z.number().int()) }),
  metrics: HubMetrics,
});
export type PoolSummary = z.infer<typeof PoolSummary>;

export const AgentsResponse = z.object({
  /** Every configured pool's agents; each names its `pool`. */
  agents: z.array(AgentSummary),
  /** Summed over the pools that answered. */
  summary: PoolSummary,
  /** Each configured pool (POOLS), `default` first. One whose hub did not answer reports zeros. */
  pools: z.array(
    PoolSummary.extend({
      pool: z.string(),
      /** The Durable Object location hint the pool is created with (null: none). */
      locationHint: z.string().nullable(),
      /** False when the pool's hub did not answer. */
      reachable: z.boolean(),
    }),
  ),
});
export type AgentsResponse = z.infer<typeof AgentsResponse>;
