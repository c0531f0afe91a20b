// One inference request inside the hub: where it is (queued, dispatched, streaming), and the HTTP
// response the Worker is waiting for — an error status before the first chunk, else NDJSON events
// written as the agent's frames arrive.
import type { ErrorCode } from "../../schema/api.ts";
import type { ChunkFrame, DoneFrame, GenerateFrame } from "../../schema/protocol.ts";
import type { AgentConnection } from "./agent-connection.ts";
import type { DispatchErrorBody, DispatchRequest, HubEvent } from "./dispatch.ts";
import { HubHeader } from "./dispatch.ts";
import type { Queued } from "./scheduling.ts";

export type JobPhase = "queued" | "dispatched" | "streaming" | "finished";

/** A caller this far behind on reading (in chunks) is treated as gone, to bound hub memory. */
const MAX_UNREAD_EVENTS = 4096;

const encoder = new TextEncoder();

export class InferenceJob implements Queued {
  phase: JobPhase = "queued";
  /** The connection working on it (a reconnect of the same agent is another connection). */
  agent: AgentConnection | null = null;
  /** Sessions this request was sent to (a retry never goes back to one of them). */
  readonly triedSessions = new Set<string>();
  attempts = 0;
  dispatchedAt: number | null = null;
  firstChunkAt: number | null = null;
  readonly response: Promise<Response>;
  #resolve!: (response: Response) => void;
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;

  constructor(
    readonly id: string,
    readonly model: string,
    readonly request: DispatchRequest,
    public deadline: number,
    /** Called once when the caller stops reading (stream cancelled or enqueue failed). */
    private readonly onCallerGone: (job: InferenceJob) => void,
  ) {
    this.response = new Promise((resolve) => {
      this.#resolve = resolve;
    });
  }

  get started(): boolean {
    return this.phase === "streaming";
  }

  generateFrame(): GenerateFrame {
    const { prompt, messages, params } = this.request;
    return { type: "generate", id: this.id, model: this.model, prompt, messages, params };
  }

  chunk(frame: ChunkFrame, agentId: string): void {
    this.#start(agentId);
    this.#write({ type: "chunk", text: frame.text, tokens: frame.tokens });
  }

  done(frame: DoneFrame, agentId: string): void {
    this.#start(agentId);
    this.#write({
      type: "done",
      finishReason: frame.finishReason,
      usage: frame.usage,
      timings: frame.timings,
    });
    this.#close();
  }

  /** Before the first chunk: an HTTP error status. After it: an explicit error event, then the end. */
  fail(code: ErrorCode, message: string, status: number, retryAfterSeconds?: number): void {
    if (this.phase === "streaming") {
      this.#write({ type: "error", code, message });
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
    const stream = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#controller = controller;
      },
      cancel: () => {
        this.#controller = null;
        this.onCallerGone(this);
      },
    });
    this.#resolve(
      new Response(stream, {
        headers: {
          "Content-Type": "application/x-ndjson",
          [HubHeader.model]: this.model,
          [HubHeader.agent]: agentId,
        },
      }),
    );
  }

  #write(event: HubEvent): void {
    const controller = this.#controller;
    if (controller === null) return;
    try {
      if ((controller.desiredSize ?? 0) < -MAX_UNREAD_EVENTS) throw new Error("caller is not reading");
      controller.enqueue(encoder.encode(`${JSON.stringify(event)}\n`));
    } catch {
      this.#controller = null;
      this.onCallerGone(this);
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
