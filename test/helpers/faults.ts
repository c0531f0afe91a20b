// Shared pieces of the fault-injection suite (test/e2e/faults): callers whose every request is
// bounded in time, an incremental SSE reader, the admin views (agents, breakers), the "nothing leaked"
// check, and a long-context copy of the demo model so real generations last long enough to be hit.
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { DEMO_MODEL_NAME, ensureDemoModel, generateDemoModel } from "../../node-agent/demo-model.ts";
import type { AgentView, Stack } from "./stack.ts";

export const MODEL = DEMO_MODEL_NAME;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects with a message naming `what` if `promise` has not settled within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `probe` until it returns a value other than undefined; throws with the last value seen. */
export async function waitUntil<T>(
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs: number,
  what: string,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (last error: ${lastError})` : ""}`);
    }
    await sleep(intervalMs);
  }
}

// ---- callers ----

export interface CallOptions {
  headers?: Record<string, string>;
  /** The whole exchange (headers and body) is aborted after this long: a hang fails, never blocks. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A caller with a user token; every fetch carries a timeout so nothing can wait forever. */
export class Caller {
  constructor(
    readonly origin: string,
    readonly token: string,
  ) {}

  post(path: string, body: unknown, { headers = {}, timeoutMs = 30_000, signal }: CallOptions = {}) {
    const timeout = AbortSignal.timeout(timeoutMs);
    return fetch(`${this.origin}${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json", ...headers },
      body: JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
  }

  generate(body: Record<string, unknown>, options?: CallOptions) {
    return this.post("/generate", { model: MODEL, ...body }, options);
  }

  chat(body: Record<string, unknown>, options?: CallOptions) {
    return this.post("/v1/chat/completions", { model: MODEL, ...body }, options);
  }
}

export interface SseEvent {
  event: string;
  data: string;
}

/** Reads an SSE body as it arrives; every wait is bounded. */
export class SseReader {
  readonly events: SseEvent[] = [];
  /** How the body ended: "eof" (closed cleanly), "error" (connection broke), undefined while open. */
  ended: "eof" | "error" | undefined;
  error: unknown;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  private pending: Promise<void> | undefined;

  constructor(res: Response) {
    if (!res.body) throw new Error(`response ${res.status} has no body`);
    this.reader = res.body.getReader();
  }

  /** Resolves with the first event (from now or already read) matching `match`, or throws after `timeoutMs`. */
  async until(match: (e: SseEvent) => boolean, timeoutMs: number, what = "event"): Promise<SseEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.find(match);
      if (hit) return hit;
      if (this.ended) throw new Error(`stream ended (${this.ended}) before ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms`);
      await within(this.pull(), left, `waiting for ${what}`).catch((err) => {
        if (Date.now() >= deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
        throw err;
      });
    }
  }

  /** Reads to the end of the body; throws if it is still open after `timeoutMs`. */
  async rest(timeoutMs: number): Promise<SseEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const left = deadline - Date.now();
      if (left <= 0) {
        void this.cancel();
        throw new Error(`stream still open after ${timeoutMs} ms (${this.events.length} events read)`);
      }
      try {
        await within(this.pull(), left, "stream end");
      } catch (err) {
        if (!this.ended) {
          void this.cancel();
          throw err;
        }
      }
    }
    return this.events;
  }

  async cancel(): Promise<void> {
    await this.reader.cancel().catch(() => {});
  }

  private pull(): Promise<void> {
    this.pending ??= this.reader.read().then(
      ({ done, value }) => {
        this.pending = undefined;
        if (done) {
          this.ended = "eof";
          return;
        }
        this.buffer += this.decoder.decode(value, { stream: true });
        this.parse();
      },
      (err: unknown) => {
        this.pending = undefined;
        this.ended = "error";
        this.error = err;
      },
    );
    return this.pending;
  }

  private parse(): void {
    for (let end = this.buffer.indexOf("\n\n"); end >= 0; end = this.buffer.indexOf("\n\n")) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      if (!block.trim()) continue;
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      this.events.push({ event, data: data.join("\n") });
    }
  }
}

/** The error event of a /generate stream: `event: error` with {error:{code,message,requestId}}. */
export function generateStreamError(
  events: SseEvent[],
): { code: string; message: string; requestId: string } | undefined {
  const e = events.find((x) => x.event === "error");
  return e
    ? (JSON.parse(e.data) as { error: { code: string; message: string; requestId: string } }).error
    : undefined;
}

/** The error of a /v1 stream: a data line {"error":{message,type,param,code}}. */
export function chatStreamError(
  events: SseEvent[],
): { message: string; type: string; param: string | null; code: string } | undefined {
  for (const e of events) {
    if (e.data === "[DONE]") continue;
    const body = JSON.parse(e.data) as {
      error?: { message: string; type: string; param: string | null; code: string };
    };
    if (body.error) return body.error;
  }
  return undefined;
}

/** Text of a /generate stream's chunk events. */
export function generateStreamText(events: SseEvent[]): string {
  return events
    .filter((e) => e.event === "chunk")
    .map((e) => (JSON.parse(e.data) as { text: string }).text)
    .join("");
}

/** Text of a /v1 stream's content deltas. */
export function chatStreamText(events: SseEvent[]): string {
  let text = "";
  for (const e of events) {
    if (e.data === "[DONE]") continue;
    const body = JSON.parse(e.data) as { choices?: Array<{ delta?: { content?: string | null } }> };
    text += body.choices?.[0]?.delta?.content ?? "";
  }
  return text;
}

/** A JSON error body's stable code ({error:{code}} on both APIs). */
export async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json().catch(() => null)) as { error?: { code?: string } } | null;
  return body?.error?.code;
}

// ---- admin views ----

export interface BreakerView {
  agentId: string;
  model: string | null;
  state: "closed" | "open" | "half_open";
  failures: number;
  successes: number;
  calls: number;
  [k: string]: unknown;
}

export interface AgentsView {
  agents: AgentView[];
  summary: {
    queue: { total: number; byModel: Record<string, number> };
    metrics: { requests: Record<string, number>; retries: number; [k: string]: unknown };
    [k: string]: unknown;
  };
}

export interface HealthView {
  at: string;
  frame: { inFlight: number; [k: string]: unknown };
}

export class Admin {
  private constructor(
    private readonly stack: Stack,
    private readonly token: string,
  ) {}

  static async for(stack: Stack): Promise<Admin> {
    return new Admin(stack, await stack.token("admin", "faults-admin"));
  }

  private async get<T>(path: string): Promise<T> {
    const res = await fetch(`${this.stack.origin}${path}`, {
      headers: { Authorization: `Bearer ${this.token}` },
      signal: AbortSignal.timeout(5_000),
    });
    if (!res.ok) throw new Error(`GET ${path} -> ${res.status}: ${await res.text()}`);
    return (await res.json()) as T;
  }

  agents(): Promise<AgentsView> {
    return this.get<AgentsView>("/agents");
  }

  async breakers(): Promise<BreakerView[]> {
    return (await this.get<{ breakers: BreakerView[] }>("/circuit-breaker/status")).breakers;
  }

  async breaker(agentId: string, model: string | null = null): Promise<BreakerView | undefined> {
    return (await this.breakers()).find((b) => b.agentId === agentId && b.model === model);
  }

  async resetBreakers(body: Record<string, string> = {}): Promise<Response> {
    return fetch(`${this.stack.origin}/circuit-breaker/reset`, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    });
  }

  /**
   * Nothing leaked: the hub holds no request for any agent (none in flight, none cancelled and still
   * awaiting the agent's answer) and queues nothing, and every agent in `reporting` sent a health
   * frame after `since` saying it runs nothing. Returns the agent list.
   */
  async expectNothingInFlight(reporting: string[], since: number, timeoutMs = 10_000): Promise<AgentsView> {
    let last: AgentsView | undefined;
    try {
      return await waitUntil(
        async () => {
          last = await this.agents();
          const view = last;
          const hubIdle =
            view.agents.every((a) => a.inFlight === 0 && a.cancelling === 0) &&
            view.summary.queue.total === 0;
          const agentsIdle = reporting.every((id) => {
            const health = view.agents.find((a) => a.id === id)?.lastHealth as HealthView | null | undefined;
            return (
              health !== undefined &&
              health !== null &&
              Date.parse(health.at) > since &&
              health.frame.inFlight === 0
            );
          });
          return hubIdle && agentsIdle ? view : undefined;
        },
        timeoutMs,
        "nothing in flight on the hub and on every agent",
      );
    } catch (err) {
      const state = last?.agents.map((a) => ({
        id: a.id,
        inFlight: a.inFlight,
        cancelling: a.cancelling,
        health: (a.lastHealth as HealthView | null)?.frame.inFlight,
        healthAt: (a.lastHealth as HealthView | null)?.at,
      }));
      throw new Error(
        `${(err as Error).message}; last: ${JSON.stringify({ state, queue: last?.summary.queue })}`,
      );
    }
  }
}

// ---- a longer-lived real generation ----

/**
 * The demo model with a longer training context (its llama.context_length patched; weights, vocab and
 * output for the first 1,024 tokens unchanged), served under the same model name. The demo model's
 * 1,024-token context ends a generation in ~0.6 s; with 4,096 one runs ~5 s on this machine, long
 * enough to kill, partition or restart things while it streams. Returns the agent's `--model` flag.
 */
export async function longDemoModelArgs(cacheDir: string, contextLength = 4096): Promise<string[]> {
  return ["--model", `${MODEL}=${await longDemoModelPath(cacheDir, contextLength)}`];
}

/** The file behind longDemoModelArgs(), written into `cacheDir` first if need be. */
export async function longDemoModelPath(cacheDir: string, contextLength = 4096): Promise<string> {
  await ensureDemoModel(cacheDir);
  const path = join(cacheDir, `demo-random-weights-ctx${contextLength}.test.gguf`);
  const bytes = Buffer.from(generateDemoModel());
  const key = Buffer.from("llama.context_length");
  const at = bytes.indexOf(key);
  // The key (gguf string: u64 length, then the bytes), a u32 type (4 = UINT32), then the u32 value.
  if (at < 0 || bytes.readUInt32LE(at + key.length) !== 4) throw new Error("demo model layout changed");
  bytes.writeUInt32LE(contextLength, at + key.length + 4);
  const existing = await stat(path).catch(() => undefined);
  if (!existing || !(await readFile(path)).equals(bytes)) await writeFile(path, bytes);
  return path;
}
