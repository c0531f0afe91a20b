// One inference request inside the hub: where it is (queued, dispatched, streaming), its deadlines,
// and the HTTP response the Worker is waiting for and passes on to the caller as it is: an error
// status before the first chunk; else, for a stream, SSE rendered as the agent's frames arrive
// (with a bound on what an unread stream holds), or the whole JSON answer once the agent is done.

import type { ErrorCode } from "../../schema/api.ts";
import { type DispatchRequest, HubHeader } from "../../schema/hub.ts";
import type { ModelId } from "../../schema/model-id.ts";
import type { ChunkFrame, DoneFrame, GenerateFrame } from "../../schema/protocol.ts";
import { type Arm, EXPERIMENT_HEADER, VARIANT_HEADER } from "../../schema/rollouts.ts";
import { completionBody, contentType, type StreamRenderer, streamRenderer } from "../render/render.ts";
import { SSE_HEADERS } from "../render/sse.ts";
import { outputBlockedMessage } from "../security/messages.ts";
import { type OutputPolicy, OutputSanitizer } from "../security/output-sanitizer.ts";
import type { AgentConnection } from "./agent-connection.ts";
import { benchTraceOn, TRACE_HEADER, traceValue } from "./bench-trace.ts";
import type { BreakerTicket } from "./circuit-breakers.ts";
import { errorResponse } from "./hub-response.ts";
import type { Queued } from "./scheduling.ts";

export type JobPhase = "queued" | "dispatched" | "streaming" | "finished";

/**
 * Most characters one token may carry. Real vocabularies stay far below (llama-3's longest tokens
 * are runs of ~128 spaces or dashes); this only has to stop an agent that sends text no sampling
 * of max_tokens tokens could produce.
 */
export const MAX_CHARS_PER_TOKEN = 256;

/**
 * Why output of `tokens` tokens and `chars` characters more would break the request's limits
 * (tokens beyond max_tokens, or more text than that many tokens can carry), or null. Counts the
 * output when it is within them.
 */
export function outputLimitViolation(job: InferenceJob, tokens: number, chars: number): string | null {
  const maxTokens = job.request.params.maxTokens;
  const outputTokens = job.outputTokens + tokens;
  const outputChars = job.outputChars + chars;
  if (outputTokens > maxTokens) return `${outputTokens} tokens for max_tokens ${maxTokens}`;
  if (outputChars > maxTokens * MAX_CHARS_PER_TOKEN) {
    return `${outputChars} characters for max_tokens ${maxTokens} (at most ${MAX_CHARS_PER_TOKEN} per token)`;
  }
  job.outputTokens = outputTokens;
  job.outputChars = outputChars;
  return null;
}

const encoder = new TextEncoder();

/** The rollout arm a request is served by: its response headers, and where its statistics go. */
export interface ServedArm {
  /** The rollout's id (X-Orchard-Experiment). */
  id: string;
  phase: number;
  arm: Arm;
  /** X-Orchard-Variant. */
  label: string;
  /**
   * False when the assigned arm had no usable agent and the other arm serves it instead: the
   * request then stays out of the statistics (a canary is not judged on capacity it was not given).
   */
  counted: boolean;
}

export interface JobCallbacks {
  /** The caller stopped reading: it cancelled the stream, or writing to it failed. Called once. */
  callerGone(job: InferenceJob): void;
  /** The caller reads so slowly that the unread bytes passed the bound. Called once. */
  slowConsumer(job: InferenceJob): void;
  /** An output content filter blocked the answer mid-generation: stop it and end it. Called once. */
  outputBlocked(job: InferenceJob, filter: string): void;
}

export interface JobLimits {
  /** Epoch ms by which the whole request (queue wait + generation) must be finished. */
  requestDeadline: number;
  /** Epoch ms after which a queued request leaves the queue with QUEUE_TIMEOUT. */
  queueDeadline: number;
  /** Unread bytes the response stream may hold. */
  streamBufferMaxBytes: number;
  /** What generated text goes through before it is rendered: controls, credentials, filters. */
  output: OutputPolicy;
}

export class InferenceJob implements Queued {
  phase: JobPhase = "queued";
  /** The connection working on it (a reconnect of the same agent is another connection). */
  agent: AgentConnection | null = null;
  /** Agents (ids) and sessions this request was sent to. */
  readonly triedAgents = new Set<string>();
  readonly triedSessions = new Set<string>();
  attempts = 0;
  /** A deprecated version pinned by the caller: the response carries a Deprecation header. */
  deprecated = false;
  /** The rollout arm serving it, when a rollout assigned it. */
  rollout: ServedArm | null = null;
  /** When the hub took the request (epoch ms): what its latency, TTFT and queue wait count from. */
  readonly createdAt: number;
  dispatchedAt: number | null = null;
  /** When the first attempt left for an agent (queue wait ends). */
  firstDispatchedAt: number | null = null;
  /** The agent of the latest attempt (kept after the attempt detaches, for metrics). */
  servedBy: string | null = null;
  /** The error code the caller got, once it failed. */
  errorCode: ErrorCode | null = null;
  /** The agent's count of the answer's tokens, once done. */
  usage: { promptTokens: number; completionTokens: number } | null = null;
  firstChunkAt: number | null = null;
  /** When the current attempt must have produced its first chunk. */
  firstChunkDeadline: number | null = null;
  /** When the stream must have produced its next chunk. */
  idleDeadline: number | null = null;
  /** The breakers the current attempt reports to (null when not dispatched). */
  ticket: BreakerTicket | null = null;
  /** Output of the current attempt so far: tokens the agent counted, characters of text. */
  outputTokens = 0;
  outputChars = 0;
  readonly requestDeadline: number;
  #queueDeadline: number;
  readonly response: Promise<Response>;
  #resolve!: (response: Response) => void;
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  readonly #streamBufferMaxBytes: number;
  /** Streamed answers: renders each event. */
  #renderer: StreamRenderer | null = null;
  /** Answers that are not streamed: the text so far (bounded by params.maxTokens). */
  #parts: string[] = [];
  /** Every chunk's text passes through it, streamed or not, before any renderer encodes it. */
  readonly #output: OutputSanitizer;

  #model: ModelId;
  #requestedModel: ModelId;

  constructor(
    readonly id: string,
    model: ModelId,
    requestedModel: ModelId,
    readonly request: DispatchRequest,
    limits: JobLimits,
    private readonly callbacks: JobCallbacks,
    now: number,
  ) {
    this.#model = model;
    this.#requestedModel = requestedModel;
    this.createdAt = now;
    this.requestDeadline = limits.requestDeadline;
    this.#queueDeadline = Math.min(limits.queueDeadline, limits.requestDeadline);
    this.#streamBufferMaxBytes = limits.streamBufferMaxBytes;
    this.#output = new OutputSanitizer(limits.output);
    this.response = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  /** The model that answers: the requested one, or a MODEL_FALLBACKS substitute. */
  get model(): ModelId {
    return this.#model;
  }

  /** The model the caller asked for, as routed (the pool's default when it named none). */
  get requestedModel(): ModelId {
    return this.#requestedModel;
  }

  /**
   * A queued request routed anew (the routing table changed, or nobody can serve its model any
   * more): another model answers it, and another arm, or none, when a rollout splits it. Only
   * before any agent started on it: what an agent streamed is never re-targeted.
   */
  retarget(route: {
    model: ModelId;
    requested: ModelId;
    deprecated: boolean;
    rollout: ServedArm | null;
  }): void {
    if (this.phase !== "queued") throw new Error(`retarget of a ${this.phase} request ${this.id}`);
    this.#model = route.model;
    this.#requestedModel = route.requested;
    this.deprecated = route.deprecated;
    this.rollout = route.rollout;
  }

  /** Queue deadline (never after the request deadline): what RequestQueue expires on. */
  get deadline(): number {
    return this.#queueDeadline;
  }

  /** A retry waits in the queue again, with a fresh queue deadline inside the request deadline. */
  requeue(queueDeadline: number): void {
    this.#queueDeadline = Math.min(queueDeadline, this.requestDeadline);
  }

  /** A new attempt starts counting its output from zero (only attempts without output are retried). */
  resetOutput(): void {
    this.outputTokens = 0;
    this.outputChars = 0;
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
    const { prompt, messages, params, format } = this.request;
    return {
      type: "generate",
      id: this.id,
      model: this.model,
      prompt,
      messages,
      params,
      ...(format === undefined ? {} : { format }),
      deadline: this.requestDeadline,
      timeoutMs: Math.max(1, Math.ceil(this.requestDeadline - now)),
    };
  }

  chunk(frame: ChunkFrame): void {
    this.#start();
    const { text, blocked } = this.#output.push(frame.text);
    if (this.#renderer === null) this.#parts.push(text);
    else if (text !== "") this.#write(this.#renderer.chunk(text));
    if (blocked !== null) this.callbacks.outputBlocked(this, blocked.name);
  }

  done(frame: DoneFrame): void {
    this.usage = frame.usage;
    this.#start();
    // What the sanitizer held back (a possible credential's start) is decided now.
    const tail = this.#output.end();
    if (tail.blocked !== null) {
      this.fail("CONTENT_FILTERED", outputBlockedMessage(tail.blocked.name));
      return;
    }
    if (this.#renderer === null) {
      const body = completionBody(this.request.response, this.model, this.#parts.join("") + tail.text, frame);
      this.#parts = [];
      this.#resolve(new Response(oneChunk(body), { headers: this.#headers() }));
      return;
    }
    if (tail.text !== "") this.#write(this.#renderer.chunk(tail.text));
    this.#write(this.#renderer.done(frame), true);
    this.#close();
  }

  /**
   * Before the answer started: an HTTP error status. A stream that started ends with an error
   * event instead (its status was sent); an answer that is not streamed is still an error status.
   */
  fail(code: ErrorCode, message: string, retryAfterSeconds?: number): void {
    this.errorCode = code;
    if (this.#renderer !== null) {
      this.#write(this.#renderer.error(code, message), true);
      this.#close();
      return;
    }
    this.#resolve(errorResponse(code, message, retryAfterSeconds, this.#rolloutHeaders()));
  }

  #rolloutHeaders(): Record<string, string> | undefined {
    const rollout = this.rollout;
    if (rollout === null) return undefined;
    return { [VARIANT_HEADER]: rollout.label, [EXPERIMENT_HEADER]: rollout.id };
  }

  /** The caller left: settle whatever it was waiting for; nobody reads it. */
  abandon(): void {
    if (this.#renderer !== null) this.#close();
    else this.#resolve(new Response(null, { status: 499 }));
  }

  #headers(): Record<string, string> {
    const headers: Record<string, string> = {
      "Content-Type": contentType(this.request.response),
      [HubHeader.model]: this.model,
    };
    if (this.deprecated) headers.Deprecation = "true";
    if (this.request.response.stream) headers["Cache-Control"] = SSE_HEADERS["Cache-Control"];
    if (this.isFallback) headers[HubHeader.fallback] = this.requestedModel;
    if (this.rollout !== null) {
      headers[VARIANT_HEADER] = this.rollout.label;
      headers[EXPERIMENT_HEADER] = this.rollout.id;
    }
    if (benchTraceOn) headers[TRACE_HEADER] = traceValue(this.id, this);
    return headers;
  }

  /** The first chunk (or `done`) arrived: a stream's response starts now, with its opening. */
  #start(): void {
    if (this.phase === "streaming") return;
    this.phase = "streaming";
    if (!this.request.response.stream) return;
    const renderer = streamRenderer(this.request.response, this.model);
    this.#renderer = renderer;
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
      // read yet (the runtime pulls only as fast as the caller reads).
      { highWaterMark: 0, size: (chunk) => chunk.byteLength },
    );
    this.#resolve(new Response(stream, { headers: this.#headers() }));
    this.#write(renderer.opening());
  }

  /** `final` messages (done, error) are written past the bound: they end the stream anyway. */
  #write(text: string, final = false): void {
    const controller = this.#controller;
    if (controller === null || text === "") return;
    const bytes = encoder.encode(text);
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

/**
 * A finished answer as a body of unknown length (sent chunked, no Content-Length). Measured with
 * `npm run bench -- --only tail` (issue 15): workerd, serving a fixed-length body, holds the next
 * request on that keep-alive connection back before the Worker sees it, and frees such requests in
 * batches: 3-5 % of requests at concurrency 32 waited 150-1,300 ms before the Worker's fetch()
 * (p99 580-850 ms, p99.9 0.9-1.3 s), while other connections were served. The bare relay did the
 * same once its streamed answer was buffered into a fixed-length one (p99 97 → 394 ms). With this
 * body: p99 166-230 ms, p99.9 241-283 ms, and 746-793 req/s instead of 500-600 (the held
 * connections had idled a share of the closed loop), for ~+150-190 µs of workerd CPU per request
 * at 250 req/s (`--against`, 3 repetitions each).
 */
function oneChunk(text: string): ReadableStream<Uint8Array> {
  // A native identity stream (no JavaScript pump, unlike a ReadableStream with a start()). Its
  // write resolves as the caller reads; a caller that left makes both fail, which is no error.
  const { readable, writable } = new IdentityTransformStream();
  const writer = writable.getWriter();
  writer.write(encoder.encode(text)).catch(() => {});
  writer.close().catch(() => {});
  return readable;
}
