// RogueAgent: a TEST DOUBLE of a node agent that misbehaves on purpose, as scripted by a test. It
// speaks the real protocol (schema/protocol.ts) over a real WebSocket with a real agent JWT, so the
// gateway cannot tell it from a broken agent:
//   "never-answers"           accepts `generate` and sends nothing for it (heartbeats go on)
//   "malformed"               sends frames that fail validation once welcomed (or on `generate`)
//   "slow"                    streams chunks at a set interval (until done, cancel, or forever)
//   "dies-before-first-chunk" drops its socket without a close frame as soon as work arrives
// Apart from its one scripted fault it behaves: it pings, reports health, and answers a `cancel` with
// `done` (cancelled) as the real agent does. It records every frame the hub sends it, so tests can
// check what the gateway did (cancel, reason), and barrier() proves every earlier frame has arrived.
import { arch, cpus, platform } from "node:os";
import WebSocket from "ws";
import {
  type AgentFrame,
  type CancelFrame,
  type GenerateFrame,
  HEARTBEAT_PING,
  HEARTBEAT_PONG,
  PROTOCOL_VERSION,
  type WelcomeFrame,
} from "../../schema/protocol.ts";

/** PROTOCOL.md, `chunk`: the most characters of text one token may carry. */
const MAX_CHARS_PER_TOKEN = 256;

export type RogueBehaviour =
  | { kind: "never-answers" }
  | {
      kind: "malformed";
      /** When the garbage goes out: right after `welcome` (default) or instead of answering a `generate`. */
      when?: "after-welcome" | "on-generate";
    }
  | {
      kind: "slow";
      /** Time between chunks, and before the first one unless firstChunkAfterMs says otherwise. */
      intervalMs: number;
      firstChunkAfterMs?: number;
      /** Text of every chunk. Default "slow ". */
      text?: string;
      /**
       * Tokens each chunk claims. Default: the fewest that may carry its text (PROTOCOL.md: at most
       * 256 characters per token), so the stream breaks no output limit before max_tokens.
       */
      tokensPerChunk?: number;
      /** Chunks before `done`; default: until cancelled. */
      chunks?: number;
    }
  | { kind: "dies-before-first-chunk" };

export interface RogueAgentOptions {
  /** The gateway's http origin. */
  origin: string;
  /** An agent token whose `sub` is `agentId`. */
  token: string;
  agentId: string;
  /** Model names announced in `hello`. */
  models: string[];
  capacity?: number;
  behaviour: RogueBehaviour;
  /** How long connect() waits for `welcome`. Default 10000. */
  timeoutMs?: number;
}

interface Stream {
  id: string;
  timer: NodeJS.Timeout | undefined;
  chunksSent: number;
  tokensSent: number;
  bytesSent: number;
  ended: "done" | "cancelled" | "closed" | undefined;
}

export class RogueAgent {
  /** Every frame the hub sent, in order (pongs excluded). */
  readonly received: Array<Record<string, unknown>> = [];
  readonly generates: GenerateFrame[] = [];
  readonly cancels: CancelFrame[] = [];
  readonly streams = new Map<string, Stream>();
  welcome: WelcomeFrame | undefined;
  closeInfo: { code: number; reason: string; at: number } | undefined;
  readonly closed: Promise<{ code: number; reason: string; at: number }>;
  private dead = false;
  private pingsSent = 0;
  private pongsReceived = 0;
  private heartbeat: NodeJS.Timeout | undefined;
  private health: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<() => void>();

  private constructor(
    private readonly ws: WebSocket,
    readonly options: RogueAgentOptions,
  ) {
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString(), at: Date.now() };
        this.stopTimers();
        for (const stream of this.streams.values()) this.endStream(stream, "closed");
        this.notify();
        resolve(this.closeInfo);
      });
    });
    ws.on("error", () => {}); // 'close' follows
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      const text = data.toString();
      if (text === HEARTBEAT_PONG) {
        this.pongsReceived += 1;
        this.notify();
        return;
      }
      this.onFrame(JSON.parse(text) as Record<string, unknown>);
    });
  }

  /** Connects, says hello, and resolves once welcomed. */
  static async connect(options: RogueAgentOptions): Promise<RogueAgent> {
    const url = `${options.origin.replace(/^http/, "ws")}/agents/connect?name=${encodeURIComponent(`rogue ${options.behaviour.kind}`)}`;
    const ws = new WebSocket(url, { headers: { Authorization: `Bearer ${options.token}` } });
    const rogue = new RogueAgent(ws, options);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
      ws.once("error", reject);
    });
    rogue.send({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      agentId: options.agentId,
      name: `rogue ${options.behaviour.kind}`,
      agentVersion: "0.0.0-test-double",
      engines: ["synthetic"],
      models: options.models.map((name) => ({ name, engine: "synthetic", loaded: true })),
      capacity: options.capacity ?? 4,
      host: {
        platform: platform(),
        arch: arch(),
        cpus: cpus().length,
        memoryTotalBytes: 1,
        memoryFreeBytes: 1,
      },
    });
    await rogue.waitFor(() => rogue.welcome !== undefined, options.timeoutMs ?? 10_000, "welcome");
    return rogue;
  }

  /** Requests it holds: generated, not finished, not cancelled, socket still open. */
  get inFlight(): number {
    return [...this.streams.values()].filter((s) => s.ended === undefined).length;
  }

  /** Resolves once `predicate` holds (checked on every frame and every `pollMs`). */
  waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!predicate()) return;
        cleanup();
        resolve();
      };
      const poll = setInterval(check, 20);
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`rogue ${this.options.agentId}: no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearInterval(poll);
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /**
   * Resolves once every frame the hub sent before this call has arrived: the hub answers pings in
   * order on the same socket, so the pong to a ping sent now comes behind all of them. A check of
   * what the rogue did *not* receive is only meaningful after this.
   */
  async barrier(timeoutMs = 5_000): Promise<void> {
    if (this.ws.readyState !== WebSocket.OPEN)
      throw new Error(`rogue ${this.options.agentId}: socket not open`);
    this.ping();
    const answered = this.pingsSent;
    await this.waitFor(() => this.pongsReceived >= answered, timeoutMs, "pong to the barrier ping");
  }

  /** Sends any text as a frame (valid or not). */
  sendRaw(text: string): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /** Closes politely; resolves once the socket is closed. */
  async close(code = 1000): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(code, "test over");
    else if (this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    const timer = setTimeout(() => this.ws.terminate(), 2_000);
    await this.closed;
    clearTimeout(timer);
  }

  /** Drops the socket without a close frame, like a crashed process. */
  terminate(): void {
    this.dead = true;
    this.ws.terminate();
  }

  private send(frame: AgentFrame): void {
    this.sendRaw(JSON.stringify(frame));
  }

  private onFrame(frame: Record<string, unknown>): void {
    // A process that died reads nothing more, even frames already in the same TCP segment.
    if (this.dead) return;
    this.received.push(frame);
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame as unknown as WelcomeFrame);
        break;
      case "generate":
        this.onGenerate(frame as unknown as GenerateFrame);
        break;
      case "cancel": {
        const cancel = frame as unknown as CancelFrame;
        this.cancels.push(cancel);
        const stream = this.streams.get(cancel.id);
        if (stream?.ended !== undefined) break;
        if (stream) this.endStream(stream, "cancelled");
        // Like the real agent: a cancelled generation ends with done/cancelled, which frees the
        // hub's slot at once. A "never-answers" agent does not even answer that.
        if (stream && this.options.behaviour.kind !== "never-answers") {
          this.send({
            type: "done",
            id: cancel.id,
            finishReason: "cancelled",
            usage: { promptTokens: 1, completionTokens: stream.tokensSent },
            timings: { firstTokenMs: 0, totalMs: 0 },
          });
        }
        break;
      }
    }
    this.notify();
  }

  private onWelcome(welcome: WelcomeFrame): void {
    this.welcome = welcome;
    // Heartbeats and health keep going whatever the behaviour: the hub must see a live agent.
    this.heartbeat = setInterval(() => this.ping(), welcome.heartbeatIntervalMs);
    this.health = setInterval(
      () =>
        this.send({
          type: "health",
          inFlight: this.inFlight,
          queued: 0,
          tokensPerSecond: 0,
          host: { platform: platform(), arch: arch(), cpus: 1, memoryTotalBytes: 1, memoryFreeBytes: 1 },
        }),
      welcome.healthIntervalMs,
    );
    const b = this.options.behaviour;
    if (b.kind === "malformed" && (b.when ?? "after-welcome") === "after-welcome") this.sendGarbage();
  }

  private onGenerate(frame: GenerateFrame): void {
    this.generates.push(frame);
    const stream: Stream = {
      id: frame.id,
      timer: undefined,
      chunksSent: 0,
      tokensSent: 0,
      bytesSent: 0,
      ended: undefined,
    };
    this.streams.set(frame.id, stream);
    const b = this.options.behaviour;
    switch (b.kind) {
      case "never-answers":
        return;
      case "malformed":
        if (b.when === "on-generate") this.sendGarbage();
        return;
      case "dies-before-first-chunk":
        this.terminate();
        return;
      case "slow": {
        const text = b.text ?? "slow ";
        const tokens = b.tokensPerChunk ?? Math.max(1, Math.ceil(text.length / MAX_CHARS_PER_TOKEN));
        const tick = () => {
          if (stream.ended !== undefined) return;
          if (b.chunks !== undefined && stream.chunksSent >= b.chunks) {
            this.send({
              type: "done",
              id: frame.id,
              finishReason: "stop",
              usage: { promptTokens: 1, completionTokens: stream.tokensSent },
              timings: { firstTokenMs: 0, totalMs: 0 },
            });
            this.endStream(stream, "done");
            return;
          }
          this.send({ type: "chunk", id: frame.id, text, tokens });
          stream.chunksSent += 1;
          stream.tokensSent += tokens;
          stream.bytesSent += Buffer.byteLength(text);
          stream.timer = setTimeout(tick, b.intervalMs);
        };
        stream.timer = setTimeout(tick, b.firstChunkAfterMs ?? b.intervalMs);
        return;
      }
    }
  }

  private ping(): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.pingsSent += 1;
    this.ws.send(HEARTBEAT_PING);
  }

  private sendGarbage(): void {
    this.sendRaw("this is not a frame {");
  }

  private endStream(stream: Stream, how: NonNullable<Stream["ended"]>): void {
    if (stream.ended !== undefined) return;
    stream.ended = how;
    clearTimeout(stream.timer);
  }

  private stopTimers(): void {
    clearInterval(this.heartbeat);
    clearInterval(this.health);
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}
