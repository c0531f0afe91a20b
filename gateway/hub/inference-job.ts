// One inference request inside the hub: where it is (queued, dispatched, streaming), its deadlines,
// and the HTTP response the Worker is waiting for — an error status before the first chunk, else
// NDJSON events written as the agent's frames arrive, with a bound on what an unread stream holds.
import type { ErrorCode } from "../../schema/api.ts";
import type { ChunkFrame, DoneFrame, GenerateFrame } from "../../schema/protocol.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { BreakerTicket } from "./circuit-breaker.ts";
import type { DispatchErrorBody, DispatchRequest, HubEvent } from "./dispatch.ts";
import { HubHeader } from "./dispatch.ts";
import type { Queued } from "./scheduling.ts";

export type JobPhase = "queued" | "dispatched" | "streaming" | "finished";

const encoder = new TextEncoder();

export interface JobCallbacks {
  /** The caller stopped reading: it cancelled the stream, or writing to it failed. Called once. */
  callerGone(job: InferenceJob): void;
  /** The caller reads so slowly that the unread bytes passed the bound. Called once. */
  slowConsumer(job: InferenceJob): void;
}

export interface JobLimits {
  /** Epoch ms by which the whole request (queue wait + generation) must be finished. */
  requestDeadline: number;
  /** Epoch ms after which a queued request leaves the queue with QUEUE_TIMEOUT. */
  queueDeadline: number;
  /** Unread bytes the response stream may hold. */
  streamBufferMaxBytes: number;
}

export class InferenceJob implements Queued {
  phase: JobPhase = "queued";
  /** The connection working on it (a reconnect of the same agent is another connection). */
  agent: AgentConnection | null = null;
  /** Agents (ids) and sessions this request was sent to. */
  readonly triedAgents = new Set<string>();
  readonly triedSessions = new Set<string>();
  attempts = 0;
  dispatchedAt: number | null = null;
  firstChunkAt: number | null = null;
  /** When the current attempt must have produced its first chunk. */
  firstChunkDeadline: number | null = null;
  /** When the stream must have produced its next chunk. */
  idleDeadline: number | null = null;
  /** The breakers the current attempt reports to (null when not dispatched). */
  ticket: BreakerTicket | null = null;
  readonly requestDeadline: number;
  #queueDeadline: number;
  readonly response: Promise<Response>;
  #resolve!: (response: Response) => void;
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  readonly #streamBufferMaxBytes: number;

  constructor(
    readonly id: string,
    /** The model that answers: the requested one, or a MODEL_FALLBACKS substitute. */
    readonly model: string,
    /** The model the caller asked for (the pool's default when it named none). */
    readonly requestedModel: string,
    readonly request: DispatchRequest,
    limits: JobLimits,
    private readonly callbacks: JobCallbacks,
  ) {
    this.requestDeadline = limits.requestDeadline;
    this.#queueDeadline = Math.min(limits.queueDeadline, limits.requestDeadline);
    this.#streamBufferMaxBytes = limits.streamBufferMaxBytes;
    this.response = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** Queue deadline (never after the request deadline): what RequestQueue expires on. */
  get deadline(): number {
    return this.#queueDeadline;
  }

  /** A retry waits in the queue again, with a fresh queue deadline inside the request deadline. */
  requeue(queueDeadline: number): void {
    this.#queueDeadline = Math.min(queueDeadline, this.requestDeadline);
  }

  get started(): boolean {
    return this.phase === "streaming";
  }

  get isFallback(): boolean {
    return this.model !== this.requestedModel;
  }

  /** The next moment something is due for this request, or null when finished. */
  nextDeadline(): number | null {
    switch (this.phase) {
      case "queued":
        return this.deadline;
      case "dispatched":
        return Math.min(this.requestDeadline, this.firstChunkDeadline ?? Number.POSITIVE_INFINITY);
      case "streaming":
        return Math.min(this.requestDeadline, this.idleDeadline ?? Number.POSITIVE_INFINITY);
      case "finished":
        return null;
    }
  }

  generateFrame(now: number): GenerateFrame {
    const { prompt, messages, params } = this.request;
    return {
      type: "generate",
      id: this.id,
      model: this.model,
      prompt,
      messages,
      params,
      deadline: this.requestDeadline,
      timeoutMs: Math.max(1, Math.ceil(this.requestDeadline - now)),
    };
  }

  chunk(frame: ChunkFrame, agentId: string): void {
    this.#start(agentId);
    this.#write({ type: "chunk", text: frame.text, tokens: frame.tokens });
  }

  done(frame: DoneFrame, agentId: string): void {
    this.#start(agentId);
    this.#write(
      { type: "done", finishReason: frame.finishReason, usage: frame.usage, timings: frame.timings },
      true,
    );
    this.#close();
  }

  /** Before the first chunk: an HTTP error status. After it: an explicit error event, then the end. */
  fail(code: ErrorCode, message: string, status: number, retryAfterSeconds?: number): void {
    if (this.phase === "streaming") {
      this.#write({ type: "error", code, message }, true);
      this.#close();
      return;
    }
    const body: DispatchErrorBody = { code, message };
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (retryAfterSeconds !== undefined) headers["Retry-After"] = String(retryAfterSeconds);
    this.#resolve(new Response(JSON.stringify(body), { status, headers }));
  }

  /** The caller left: settle whatever it was waiting for; nobody reads it. */
  abandon(): void {
    if (this.phase === "streaming") this.#close();
    else this.#resolve(new Response(null, { status: 499 }));
  }

  #start(agentId: string): void {
    if (this.phase === "streaming") return;
    this.phase = "streaming";
    const stream = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          this.#controller = controller;
        },
        cancel: () => {
          this.#controller = null;
          this.callbacks.callerGone(this);
        },
      },
      // Sized in bytes with no high-water mark: desiredSize is minus the bytes the caller has not
      // read yet (the runtime pulls only as fast as the Worker, and so the caller, reads).
      { highWaterMark: 0, size: (chunk) => chunk.byteLength },
    );
    const headers: Record<string, string> = {
      "Content-Type": "application/x-ndjson",
      [HubHeader.model]: this.model,
      [HubHeader.agent]: agentId,
    };
    if (this.isFallback) headers[HubHeader.fallback] = this.requestedModel;
    this.#resolve(new Response(stream, { headers }));
  }

  /** `final` events (done, error) are written past the bound: they end the stream anyway. */
  #write(event: HubEvent, final = false): void {
    const controller = this.#controller;
    if (controller === null) return;
    const bytes = encoder.encode(`${JSON.stringify(event)}\n`);
    const unread = -(controller.desiredSize ?? 0);
    if (!final && unread + bytes.byteLength > this.#streamBufferMaxBytes) {
      this.callbacks.slowConsumer(this);
      return;
    }
    try {
      controller.enqueue(bytes);
    } catch {
      this.#controller = null;
      this.callbacks.callerGone(this);
    }
  }

  #close(): void {
    const controller = this.#controller;
    this.#controller = null;
    try {
      controller?.close();
    } catch {
      // Already cancelled by the caller.
    }
  }
}
