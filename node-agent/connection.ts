// The agent's reconnecting WebSocket client: dials the gateway with the agent token, keeps a
// heartbeat once welcomed, and after a close decides per close code whether to reconnect (with
// full-jitter exponential backoff) or stop for good.
import WebSocket from "ws";
import {
  CloseCode,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  isTerminalCloseCode,
  MAX_FRAME_BYTES,
} from "../schema/protocol.ts";
import { errorMessage, type Logger, silentLogger } from "./log.ts";

/** Process exit codes of the agent; operators and launchd see these. */
export const ExitCode = {
  OK: 0,
  FAILURE: 1,
  CONFIG: 2,
  /** The gateway refused the token (HTTP 401/403 on upgrade, or close 4001/4002). */
  UNAUTHORIZED: 3,
  /** The hub closed with another terminal code (incompatible version, superseded). */
  REFUSED: 4,
} as const;

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(max, base * 2^attempt)).
 * `attempt` counts failed connections since the last stable one, from 0.
 */
export function backoffDelay(
  attempt: number,
  { baseMs, maxMs }: BackoffOptions,
  random = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, attempt), 32));
  return Math.floor(random() * ceiling);
}

export type CloseDecision = { action: "reconnect" } | { action: "stop"; exitCode: number; reason: string };

/** What to do after the hub closed the socket with `code`. */
export function decideOnClose(code: number): CloseDecision {
  switch (code) {
    case CloseCode.DRAINED: // we asked to leave (or the hub confirms we did): done, successfully
      return { action: "stop", exitCode: ExitCode.OK, reason: "drained" };
    case CloseCode.UNAUTHORIZED: // the token will keep failing until someone replaces it
      return { action: "stop", exitCode: ExitCode.UNAUTHORIZED, reason: "the hub refused the agent token" };
    case CloseCode.REVOKED: // an admin revoked this agent; coming back would be refused again
      return { action: "stop", exitCode: ExitCode.UNAUTHORIZED, reason: "this agent is revoked" };
    case CloseCode.INCOMPATIBLE_VERSION: // needs an agent upgrade, not a retry
      return {
        action: "stop",
        exitCode: ExitCode.REFUSED,
        reason: "the hub does not speak this protocol version",
      };
    case CloseCode.SUPERSEDED: // another process holds this agent id now; fighting it would flap both
      return { action: "stop", exitCode: ExitCode.REFUSED, reason: "superseded by a newer connection" };
    case CloseCode.PROTOCOL_ERROR: // a frame of ours was rejected; a fresh session starts clean
    case CloseCode.HELLO_TIMEOUT: // our hello was late; try again
    case CloseCode.HEARTBEAT_TIMEOUT: // the hub thought we were dead; we are not
    case CloseCode.GOING_AWAY: // hub restarting or redeploying
    case CloseCode.SESSION_UNKNOWN: // the hub lost our session (e.g. a failed restore): say hello again
    case CloseCode.LIMIT_EXCEEDED: // one request broke a limit; the hub ended it, not us
      return { action: "reconnect" };
    default: // transport closes (1000, 1001, 1006, ...) and codes added later: only terminal ones stop
      return isTerminalCloseCode(code)
        ? { action: "stop", exitCode: ExitCode.REFUSED, reason: `terminal close code ${code}` }
        : { action: "reconnect" };
  }
}

/** One socket's lifetime, as the session logic sees it. */
export interface Link {
  /** Increases with every new socket; frames of an old link are never sent on a new one. */
  readonly id: number;
  readonly open: boolean;
  readonly bufferedAmount: number;
  /** Sends a text frame; false if the socket is no longer open. */
  send(text: string): boolean;
  /** Resolves once bufferedAmount is at most `limit` or the socket has closed. */
  whenWritable(limit: number): Promise<void>;
}

export interface ConnectionHandlers {
  /** A socket opened: say hello. */
  onOpen(link: Link): void;
  /** A frame other than the heartbeat pong arrived. Binary frames arrive as ArrayBuffer. */
  onFrame(data: string | ArrayBuffer, link: Link): void;
  /** The socket closed; whatever was in flight on it is lost. */
  onClose(info: { code: number; reason: string; link: Link }): void;
}

export interface ConnectionOptions {
  /** ws(s)://…/agents/connect */
  url: string;
  token: string;
  backoff?: BackoffOptions;
  /** A connection welcomed at least this long ago counts as stable: the backoff starts over. */
  stableAfterMs?: number;
  handshakeTimeoutMs?: number;
  /** A socket not welcomed this long after it opened is dropped and redialled. Default 10000. */
  welcomeTimeoutMs?: number;
  /** How long stop() waits for the close handshake before dropping the socket. */
  closeTimeoutMs?: number;
  logger?: Logger;
  random?: () => number;
}

export interface ConnectionEnd {
  exitCode: number;
  reason: string;
}

class SocketLink implements Link {
  private waiters: Array<{ limit: number; resolve: () => void }> = [];

  constructor(
    readonly id: number,
    readonly ws: WebSocket,
  ) {}

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(text: string): boolean {
    if (!this.open) return false;
    this.ws.send(text, this.written);
    return true;
  }

  whenWritable(limit: number): Promise<void> {
    if (!this.open || this.ws.bufferedAmount <= limit) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ limit, resolve }));
  }

  /** Called by ws when a frame reached the kernel (or failed); wakes writers below their limit. */
  private readonly written = () => {
    if (this.waiters.length === 0) return;
    const buffered = this.open ? this.ws.bufferedAmount : 0;
    this.waiters = this.waiters.filter((w) => {
      if (buffered > w.limit) return true;
      w.resolve();
      return false;
    });
  };

  closed(): void {
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }
}

export class Connection {
  private readonly backoff: BackoffOptions;
  private readonly stableAfterMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly welcomeTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly log: Logger;
  private readonly random: () => number;

  private attempt = 0;
  private linkSeq = 0;
  private link: SocketLink | undefined;
  private welcomedAt: number | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private welcomeTimer: NodeJS.Timeout | undefined;
  private receivedSincePing = true;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closeTimer: NodeJS.Timeout | undefined;
  /** Set once the connection must not reconnect; the end is reported when the socket is gone. */
  private ending: ConnectionEnd | undefined;
  private ended = false;
  private resolveEnd!: (end: ConnectionEnd) => void;
  readonly end: Promise<ConnectionEnd> = new Promise((resolve) => {
    this.resolveEnd = resolve;
  });

  constructor(
    private readonly options: ConnectionOptions,
    private readonly handlers: ConnectionHandlers,
  ) {
    this.backoff = options.backoff ?? { baseMs: 500, maxMs: 30_000 };
    this.stableAfterMs = options.stableAfterMs ?? 10_000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    this.welcomeTimeoutMs = options.welcomeTimeoutMs ?? 10_000;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 2_000;
    this.log = options.logger ?? silentLogger;
    this.random = options.random ?? Math.random;
  }

  /** Dials now and keeps reconnecting until a terminal close or stop(); resolves with the end. */
  start(): Promise<ConnectionEnd> {
    if (!this.link && !this.ended) this.connect();
    return this.end;
  }

  /** The hub welcomed us: heartbeat every `intervalMs`, and start the stability clock. */
  welcomed(intervalMs: number): void {
    this.welcomedAt = Date.now();
    this.stopTimers();
    this.receivedSincePing = true;
    const link = this.link;
    this.heartbeat = setInterval(() => {
      if (!link || link !== this.link) return;
      if (!this.receivedSincePing) {
        // A dead peer behind NAT can leave TCP "open" for minutes; don't wait for it.
        this.log.warn("heartbeat timeout", { intervalMs });
        link.ws.terminate();
        return;
      }
      this.receivedSincePing = false;
      link.send(HEARTBEAT_PING);
    }, intervalMs);
  }

  /** Closes with `code` and never reconnects. Resolves once the socket is gone. */
  stop(code: number = 1000, reason = "", exitCode: number = ExitCode.OK): Promise<ConnectionEnd> {
    this.ending ??= { exitCode, reason: reason || "stopped" };
    clearTimeout(this.reconnectTimer);
    const ws = this.link?.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) {
      this.finish();
    } else if (ws.readyState === WebSocket.OPEN) {
      ws.close(code, reason);
      this.closeTimer ??= setTimeout(() => ws.terminate(), this.closeTimeoutMs);
    } else if (ws.readyState === WebSocket.CONNECTING) {
      ws.terminate();
    }
    return this.end;
  }

  private connect(): void {
    const ws = new WebSocket(this.options.url, {
      headers: { Authorization: `Bearer ${this.options.token}` },
      handshakeTimeout: this.handshakeTimeoutMs,
      maxPayload: MAX_FRAME_BYTES,
      perMessageDeflate: false,
    });
    const link = new SocketLink(++this.linkSeq, ws);
    this.link = link;
    this.welcomedAt = undefined;
    this.log.debug("connecting", { url: this.options.url, attempt: this.attempt });

    ws.on("unexpected-response", (_req, res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      if (status === 401 || status === 403) {
        this.log.error("gateway refused the agent token", {
          status,
          hint: "check --token / ORCHARD_AGENT_TOKEN (role agent, not expired, not revoked)",
        });
        this.ending ??= { exitCode: ExitCode.UNAUTHORIZED, reason: `upgrade refused with HTTP ${status}` };
      } else {
        this.log.warn("gateway refused the upgrade", { status });
      }
      ws.terminate();
    });
    ws.on("open", () => {
      this.log.debug("socket open", { link: link.id });
      // No heartbeat runs before `welcome`; a hub that never answers hello must not hold us forever.
      this.welcomeTimer = setTimeout(() => {
        this.log.warn("no welcome from the hub", { timeoutMs: this.welcomeTimeoutMs });
        ws.terminate();
      }, this.welcomeTimeoutMs);
      this.handlers.onOpen(link);
    });
    ws.on("message", (data, isBinary) => {
      this.receivedSincePing = true;
      if (!isBinary) {
        const text = data.toString();
        if (text === HEARTBEAT_PONG) return;
        this.handlers.onFrame(text, link);
      } else {
        this.handlers.onFrame(new ArrayBuffer(0), link);
      }
    });
    ws.on("error", (err) => {
      // 'close' always follows; the decision is made there.
      if (!this.ending) this.log.warn("connection error", { error: errorMessage(err) });
    });
    ws.on("close", (code, reasonBuffer) => this.closed(link, code, reasonBuffer.toString()));
  }

  private closed(link: SocketLink, code: number, reason: string): void {
    if (link !== this.link) return;
    this.stopTimers();
    clearTimeout(this.closeTimer);
    this.closeTimer = undefined;
    link.closed();
    if (this.welcomedAt !== undefined && Date.now() - this.welcomedAt >= this.stableAfterMs) this.attempt = 0;
    this.welcomedAt = undefined;
    this.handlers.onClose({ code, reason, link });
    this.link = undefined;

    if (!this.ending) {
      const decision = decideOnClose(code);
      if (decision.action === "stop") {
        this.log.error("hub closed the connection for good", { code, reason: decision.reason });
        this.ending = { exitCode: decision.exitCode, reason: decision.reason };
      }
    }
    if (this.ending) {
      this.finish();
      return;
    }
    const delayMs = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.log.info("disconnected", { code, reason, reconnectInMs: delayMs, attempt: this.attempt });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (!this.ending) this.connect();
    }, delayMs);
  }

  private stopTimers(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    clearTimeout(this.welcomeTimer);
    this.welcomeTimer = undefined;
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.stopTimers();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.closeTimer);
    this.resolveEnd(this.ending ?? { exitCode: ExitCode.OK, reason: "stopped" });
  }
}
