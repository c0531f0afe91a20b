// The AgentHub's table of agent connections: at most one per agent id, each tied to its
// hibernatable socket, whose attachment carries what must survive a wake (identity, capabilities;
// capabilities too large for an attachment go to storage). A socket the table does not know is
// adopted from its attachment, so a hub that lost its table (a failed restore) rebuilds it
// instead of turning the fleet away.
import { CloseCode } from "../../schema/protocol.ts";
import { describeError, log } from "../log.ts";
import {
  type AgentAttachment,
  type AgentCapabilities,
  AgentConnection,
  type AgentIdentity,
  capsStorageKey,
} from "./agent-connection.ts";

export type Adoption = { agent: AgentConnection } | { agent: null; code: CloseCode; reason: string };

export class AgentSockets {
  readonly #agents = new Map<string, AgentConnection>();
  /** Sockets to their connection: deserializing the attachment per frame cost ~4% of the hub's CPU. */
  readonly #bySocket = new WeakMap<WebSocket, AgentConnection>();

  constructor(private readonly ctx: DurableObjectState) {}

  values(): IterableIterator<AgentConnection> {
    return this.#agents.values();
  }

  get(agentId: string): AgentConnection | undefined {
    return this.#agents.get(agentId);
  }

  has(agentId: string): boolean {
    return this.#agents.has(agentId);
  }

  /**
   * Accepts a new socket for `identity`: older sockets of the same agent (the tracked one, and
   * any the table lost track of) are closed as superseded — true now, as the newer one exists.
   * Returns the new connection, the client end for the 101 response, and the one it replaced.
   */
  accept(identity: AgentIdentity, now: number) {
    const previous = this.#agents.get(identity.agentId);
    for (const older of this.ctx.getWebSockets(identity.agentId)) {
      closeQuietly(older, CloseCode.SUPERSEDED, "superseded by a newer connection");
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [identity.agentId]);
    const agent = new AgentConnection(server, identity, {}, now);
    this.#agents.set(identity.agentId, agent);
    this.#bySocket.set(server, agent);
    this.persist(agent);
    return { agent, client, previous };
  }

  /** The live connection a socket belongs to, or null when the table does not hold it. */
  of(ws: WebSocket): AgentConnection | null {
    const known = this.#bySocket.get(ws);
    if (known !== undefined && this.#agents.get(known.id) === known) return known;
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment === null) return null;
    const agent = this.#agents.get(attachment.agentId);
    if (agent === undefined || agent.sessionId !== attachment.sessionId) return null;
    this.#bySocket.set(ws, agent);
    return agent;
  }

  /**
   * Rebuilds a socket's connection from its attachment (after a wake, or for a socket the table
   * lost). Refused when the socket is closing, carries no attachment (SESSION_UNKNOWN: reconnect
   * and say hello), or a newer connection of the same agent is in the table (SUPERSEDED).
   */
  async adopt(ws: WebSocket, now: number): Promise<Adoption> {
    if (ws.readyState === WebSocket.CLOSING || ws.readyState === WebSocket.CLOSED) {
      return { agent: null, code: CloseCode.GOING_AWAY, reason: "closing" };
    }
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment === null) {
      return { agent: null, code: CloseCode.SESSION_UNKNOWN, reason: "unknown session; reconnect" };
    }
    const current = this.#agents.get(attachment.agentId);
    if (current !== undefined && current.sessionId === attachment.sessionId) return { agent: current };
    if (current !== undefined && current.identity.connectedAt >= attachment.connectedAt) {
      return { agent: null, code: CloseCode.SUPERSEDED, reason: "superseded by a newer connection" };
    }
    let caps = attachment.caps;
    if (attachment.capsInStorage) {
      try {
        caps = (await this.ctx.storage.get<AgentCapabilities>(capsStorageKey(attachment.sessionId))) ?? null;
      } catch (err) {
        // Without its capabilities the agent counts as not ready; the hello deadline then closes
        // it (non-terminal), and its reconnect says hello again.
        log("error", "agent capabilities could not be read", {
          agentId: attachment.agentId,
          ...describeError(err),
        });
        caps = null;
      }
    }
    const { agentId, name, pool, sessionId, connectedAt, draining, capsInStorage } = attachment;
    const identity = {
      agentId,
      name,
      pool,
      sessionId,
      connectedAt,
      tokenExpiresAt: attachment.tokenExpiresAt ?? null,
    };
    // Re-check after the await: another adoption of a newer socket may have finished meanwhile.
    const latest = this.#agents.get(agentId);
    if (latest !== undefined && latest.identity.connectedAt >= connectedAt) {
      return latest.sessionId === sessionId
        ? { agent: latest }
        : { agent: null, code: CloseCode.SUPERSEDED, reason: "superseded by a newer connection" };
    }
    if (latest !== undefined)
      closeQuietly(latest.ws, CloseCode.SUPERSEDED, "superseded by a newer connection");
    const agent = new AgentConnection(ws, identity, { caps, draining, capsInStorage }, now);
    this.#agents.set(agentId, agent);
    this.#bySocket.set(ws, agent);
    return { agent };
  }

  /** Removes a connection from the table (if it is still the agent's current one). */
  forget(agent: AgentConnection): void {
    if (this.#agents.get(agent.id) === agent) this.#agents.delete(agent.id);
    if (agent.capsInStorage) this.#unawaited(this.ctx.storage.delete(capsStorageKey(agent.sessionId)));
  }

  /** A storage write nothing waits for: a failure (the object being reset) is logged, not unhandled. */
  #unawaited(write: Promise<unknown>): void {
    write.catch((err: unknown) =>
      log("warn", "hub: agent capabilities storage write failed", describeError(err)),
    );
  }

  /** Mirrors a connection into its socket's attachment (capabilities to storage when too big). */
  persist(agent: AgentConnection): void {
    const attachment = agent.attachment();
    try {
      agent.ws.serializeAttachment(attachment);
      if (agent.capsInStorage) this.#unawaited(this.ctx.storage.delete(capsStorageKey(agent.sessionId)));
      agent.capsInStorage = false;
    } catch {
      // Over the 16 KiB attachment limit: keep identity on the socket, capabilities in storage.
      agent.ws.serializeAttachment({
        ...attachment,
        caps: null,
        capsInStorage: true,
      } satisfies AgentAttachment);
      this.#unawaited(this.ctx.storage.put(capsStorageKey(agent.sessionId), attachment.caps));
      agent.capsInStorage = true;
    }
  }
}

/** Close reasons are limited to 123 bytes; closing an already-closed socket is not an error. */
export function closeQuietly(ws: WebSocket, code: number, reason: string): void {
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
