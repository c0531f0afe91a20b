// Which agent takes a request now, and which it must not: breakers that do not let it through,
// an agent still winding down this very request, agents a rolling deployment moved off the model,
// and the agents it already failed on while another agent serves the model; and, for a request
// with a `format`, agents that enforce it first. Pure over the pool's ready agents, its breakers
// and the routing table's rolling assignments.
import type { ModelId } from "../../schema/model-id.ts";
import { enforcesFormat } from "../../schema/protocol.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { CircuitBreakers } from "./circuit-breakers.ts";
import { hasCandidate, pickAgent } from "./scheduling.ts";

/** What choosing looks at: the request's id, the agents it was already sent to, and its format. */
export interface Attempted {
  id: string;
  triedAgents: ReadonlySet<string>;
  /** The dispatched request (InferenceJob's): a `format` makes agents that enforce it preferred. */
  request?: { format?: unknown };
}

export interface Exclusions {
  /** Agents the request must not be sent to now. */
  pick: Set<string>;
  /** Agents that could never take it (for "could anyone ever take it"). */
  exist: Set<string>;
}

export class AgentChoice {
  constructor(
    private readonly breakers: CircuitBreakers,
    private readonly ready: () => AgentConnection[],
    /** Agents a rolling deployment moved off `model` (routing-table.ts rollingDrained). */
    private readonly drained: (model: ModelId) => ReadonlySet<string> | undefined = () => undefined,
  ) {}

  /**
   * The agent to send `job` (or, with null, any request) for `model` to now, or null. A request
   * with a format goes to an agent that enforces it for the model when one can take it now, else
   * to any other: the gateway validates every output, so waiting for an enforcing agent would only
   * trade latency for fewer retries.
   */
  pick(model: ModelId, job: Attempted | null, now: number): AgentConnection | null {
    const ready = this.ready();
    const exclude = this.exclusions(model, job, now, ready).pick;
    if (job?.request?.format !== undefined) {
      const enforcing = pickAgent(
        ready.filter((agent) => enforcesFormatFor(agent, model)),
        model,
        exclude,
      );
      if (enforcing) return enforcing;
    }
    return pickAgent(ready, model, exclude);
  }

  /** Whether some agent other than the excluded ones could ever take the request. */
  anyCandidate(model: ModelId, job: Attempted | null, now: number): boolean {
    const ready = this.ready();
    return hasCandidate(ready, model, this.exclusions(model, job, now, ready).exist);
  }

  /**
   * `pick`: breakers that do not let it through (open, or half-open with every probe slot taken),
   * an agent still winding down this request (it would refuse or ignore a second `generate` with
   * the same id; it can take the request once it answered), plus the agents it already failed on
   * while another agent serves the model. `exist`: open breakers, agents a rolling deployment
   * moved off the model (both lists), and, while another agent serves the model, the agents
   * already tried.
   */
  exclusions(model: ModelId, job: Attempted | null, now: number, ready = this.ready()): Exclusions {
    const open = new Set<string>();
    const blocked = new Set<string>();
    for (const agent of ready) {
      if (!agent.models.has(model)) continue;
      if (this.breakers.isOpen(agent.id, model, now)) open.add(agent.id);
      if (!this.breakers.allows(agent.id, model, now)) blocked.add(agent.id);
      if (job !== null && agent.releasing.has(job.id)) blocked.add(agent.id);
    }
    const drained = this.drained(model);
    if (drained !== undefined) {
      for (const id of drained) {
        open.add(id);
        blocked.add(id);
      }
    }
    if (job !== null && job.triedAgents.size > 0) {
      const avoid = new Set([...open, ...job.triedAgents]);
      if (hasCandidate(ready, model, avoid)) {
        for (const id of job.triedAgents) blocked.add(id);
        return { pick: blocked, exist: avoid };
      }
    }
    return { pick: blocked, exist: open };
  }

  /**
   * Whether `model` has agents that would serve it but every one has its breaker for it open: the
   * version itself has been failing there (not a capacity problem).
   */
  shedByBreakers(model: ModelId, now: number): boolean {
    const drained = this.drained(model);
    const serving = this.ready().filter(
      (a) => !a.draining && a.models.has(model) && !(drained?.has(a.id) ?? false),
    );
    return serving.length > 0 && serving.every((a) => this.breakers.isOpen(a.id, model, now));
  }

  /** Ready agents whose breakers for `model` are not open and that no rolling deployment moved off it. */
  usable(model: ModelId, now: number): AgentConnection[] {
    const drained = this.drained(model);
    return this.ready().filter(
      (a) => !this.breakers.isOpen(a.id, model, now) && !(drained?.has(a.id) ?? false),
    );
  }
}

/**
 * Whether `agent` enforces a request's format on `model`: it offered structured_output and, when
 * its hello said which engine serves the model and what that engine can do, that engine enforces
 * (an agent running llama.cpp and MLX offers structured_output, but its MLX models enforce nothing).
 */
export function enforcesFormatFor(agent: AgentConnection, model: ModelId): boolean {
  if (!agent.can("structured_output")) return false;
  const engine = agent.caps?.models.find((m) => m.name === model)?.engine;
  const info = agent.caps?.engineInfo?.find((e) => e.name === engine);
  return info === undefined || enforcesFormat(info);
}
