// Generations the hub has stopped caring about but an agent may still be running: requests it
// cancelled (the slot stays taken until the agent answers, as the agent counts it until then),
// duplicates an agent is still winding down, and orphans (chunks for ids this hub never knew,
// after it restarted). Frames that arrive late for a request that ended are told apart from
// orphans by a bounded memory of recently ended ids.
import type { CancelFrame, GatewayFrame } from "../../schema/protocol.ts";
import { log } from "../log.ts";
import type { AgentConnection } from "./agent-connection.ts";

/**
 * How long a cancelled generation keeps its slot while the hub waits for the agent's `done`
 * (the node agent answers a cancel within about 2 s: CANCEL_USAGE_GRACE_MS there).
 */
export const CANCEL_ACK_GRACE_MS = 5_000;
/**
 * How long an agent that answered DUPLICATE_REQUEST is not sent that request again: its older
 * generation of it is aborting (the agent's reconnect aborted it) and usually gone within ms.
 */
export const DUPLICATE_BACKOFF_MS = 1_000;
/** How many ended request ids are remembered, to tell late frames from orphaned generations. */
const RECENT_IDS = 1024;

export interface CancellationHost {
  send(agent: AgentConnection, frame: GatewayFrame): boolean;
  wakeAt(at: number): void;
  now(): number;
  /** Whether a request id is live in the dispatcher. */
  isLive(id: string): boolean;
}

export class Cancellations {
  readonly #recentIds = new Set<string>();

  constructor(private readonly host: CancellationHost) {}

  /** Sends `cancel` and keeps the agent's slot for the request until it answers (or the grace). */
  cancel(agent: AgentConnection, id: string, reason: CancelFrame["reason"]): void {
    this.#hold(agent, id, CANCEL_ACK_GRACE_MS);
    this.host.send(agent, { type: "cancel", id, reason });
  }

  /** The agent still runs an older generation of `id`: don't send it `id` for a moment. */
  duplicate(agent: AgentConnection, id: string): void {
    this.#hold(agent, id, DUPLICATE_BACKOFF_MS);
  }

  /** The agent answered (done or error) a request the hub no longer tracks: true if that freed a slot. */
  released(agent: AgentConnection, id: string): boolean {
    return agent.releasing.delete(id);
  }

  /** Slots whose grace passed without an answer are freed; true if any was. */
  expire(agents: Iterable<AgentConnection>, now: number): boolean {
    let freed = false;
    for (const agent of agents) {
      for (const [id, until] of agent.releasing) {
        if (until > now) continue;
        agent.releasing.delete(id);
        freed = true;
        log("info", "freeing a held slot", { requestId: id, agentId: agent.id });
      }
    }
    return freed;
  }

  nextDeadline(agents: Iterable<AgentConnection>): number | null {
    let next: number | null = null;
    for (const agent of agents) {
      for (const at of agent.releasing.values()) if (next === null || at < next) next = at;
    }
    return next;
  }

  /**
   * A chunk for a request this hub does not know: if it is not a late frame of a request that
   * ended here, the hub restarted while the agent kept generating; tell the agent to stop, once.
   */
  orphan(agent: AgentConnection, id: string): void {
    if (agent.releasing.has(id) || this.host.isLive(id) || this.#recentIds.has(id)) return;
    this.remember(id);
    log("info", "cancelling an orphaned generation", { requestId: id, agentId: agent.id });
    this.cancel(agent, id, "hub_shutdown");
  }

  /** A request ended here: frames for it from now on are late, not orphans. */
  remember(id: string): void {
    this.#recentIds.delete(id);
    this.#recentIds.add(id);
    if (this.#recentIds.size > RECENT_IDS) {
      const oldest = this.#recentIds.values().next().value;
      if (oldest !== undefined) this.#recentIds.delete(oldest);
    }
  }

  #hold(agent: AgentConnection, id: string, forMs: number): void {
    const until = this.host.now() + forMs;
    agent.releasing.set(id, until);
    this.host.wakeAt(until);
  }
}
