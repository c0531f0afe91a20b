// The fuzz tests' side of the Worker (docs/fuzzing.md): run counts and seeds from FUZZ_* variables,
// a fast-check runner whose failures say how to replay them, tokens made from recipes, requests
// sent with a time bound, agents on real upgraded sockets (one that serves every request, one
// scripted frame by frame), and a well-behaved caller that runs beside the fuzzing.
import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { SignJWT } from "jose";
import { vi } from "vitest";
import worker from "../../gateway/index.ts";
import type { AgentFrame, GatewayFrame, GenerateFrame } from "../../schema/protocol.ts";
import type { AuthRecipe } from "./fuzz-http-arbitraries.ts";
import { BASE, bearer, helloFrame, sleep, uniqueId } from "./helpers.ts";

// ---- configuration ----

const vars = (import.meta as unknown as { env?: Record<string, string | undefined> }).env ?? {};

function intVar(name: string): number | undefined {
  const raw = vars[name];
  if (raw === undefined || raw.trim() === "") return undefined;
  const value = Number(raw);
  if (!Number.isSafeInteger(value)) throw new Error(`${name} must be an integer, got ${raw}`);
  return value;
}

/** Runs per property: small by default (CI), FUZZ_RUNS for a long run (`npm run fuzz`). */
export const FUZZ_RUNS = intVar("FUZZ_RUNS") ?? 12;
/** A run with FUZZ_RUNS set (the long run) prints what it did; CI's stays quiet. */
export const FUZZ_VERBOSE = intVar("FUZZ_RUNS") !== undefined;
/** The base seed; each property derives its own from it and its name. Random unless FUZZ_SEED. */
export const FUZZ_SEED = intVar("FUZZ_SEED") ?? (Date.now() ^ Math.floor(Math.random() * 2 ** 31)) | 0;
/** With FUZZ_SEED and -t <property>: replays one counterexample (fast-check's path). */
const FUZZ_PATH = vars.FUZZ_PATH;

/** A per-test timeout for `runs` runs of about `perRunMs`, with room for shrinking a failure. */
export const timeoutFor = (runs: number, perRunMs: number) => 30_000 + runs * perRunMs * 3;

function seedOf(name: string): number {
  let hash = FUZZ_SEED;
  for (let i = 0; i < name.length; i++) hash = (Math.imul(hash, 31) + name.charCodeAt(i)) | 0;
  return hash;
}

/**
 * Runs a property FUZZ_RUNS times (or `runs`); a failure throws fast-check's report (seed,
 * counterexample, its shrunk form) headed by the command that replays it.
 */
export async function fuzz<T>(
  name: string,
  property: fc.IAsyncPropertyWithHooks<T>,
  { runs = FUZZ_RUNS, file, examples = [] }: { runs?: number; file: string; examples?: T[] },
): Promise<void> {
  const details = await fc.check(property, {
    numRuns: runs,
    seed: seedOf(name),
    // Counterexamples found before, played first in every run (fast-check's `examples`).
    examples,
    ...(FUZZ_PATH === undefined ? {} : { path: FUZZ_PATH }),
  });
  if (!details.failed) return;
  const replay =
    `FUZZ_SEED=${FUZZ_SEED} FUZZ_PATH=${details.counterexamplePath ?? ""} ` +
    `npx vitest run --project gateway ${file} -t ${JSON.stringify(name)}`;
  const error =
    details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
  throw new Error(
    `fuzz property ${JSON.stringify(name)} failed; replay with:\n  ${replay}\n\n${error}\n\n${fc.defaultReportMessage(details)}`,
  );
}

// ---- tokens ----

const encoder = new TextEncoder();
const base64url = (text: string) => btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

function rotatedKey(): { kid: string; secret: string } {
  const [kid, secret] =
    Object.entries(JSON.parse(env.JWT_SECRETS as string) as Record<string, string>)[0] ?? [];
  if (kid === undefined || secret === undefined) throw new Error("the test bindings name no JWT_SECRETS key");
  return { kid, secret };
}

/** The Authorization header values a recipe stands for (none, one, or two). */
export async function renderAuth(recipe: AuthRecipe, caller: string): Promise<string[]> {
  switch (recipe.a) {
    case "none":
      return [];
    case "raw":
      return [recipe.value];
    case "metrics-token":
      return [`Bearer ${env.METRICS_TOKEN as string}`];
    case "two-headers":
      return [(await bearer({ sub: caller, role: recipe.first })).Authorization, recipe.second];
    case "jwt":
      return [`${recipe.scheme} ${await jwtOf(recipe, caller)}${recipe.suffix}`];
  }
}

async function jwtOf(recipe: Extract<AuthRecipe, { a: "jwt" }>, caller: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { iat: now };
  if (recipe.role !== null) claims.role = recipe.role;
  if (recipe.sub !== "missing") claims.sub = { caller, long: "s".repeat(200), empty: "" }[recipe.sub];
  if (recipe.exp !== "missing")
    claims.exp = now + { valid: 300, expired: -60, far: 10 * 365 * 86_400 }[recipe.exp];
  if (recipe.key === "alg-none") {
    return `${base64url(JSON.stringify({ alg: "none" }))}.${base64url(JSON.stringify(claims))}.`;
  }
  const rotated = rotatedKey();
  const header =
    recipe.key === "rotated"
      ? { alg: "HS256", kid: rotated.kid }
      : recipe.key === "unknown-kid"
        ? { alg: "HS256", kid: "no-such-kid" }
        : { alg: "HS256" };
  const secret =
    recipe.key === "rotated"
      ? rotated.secret
      : recipe.key === "wrong"
        ? "another-secret-entirely-0123456789abcdef"
        : (env.JWT_SECRET as string);
  return new SignJWT(claims).setProtectedHeader(header).sign(encoder.encode(secret));
}

/** Milliseconds since the fuzz file started: on failures and slow answers, to line them up. */
const T0 = Date.now();
export const since = () => Date.now() - T0;

// ---- the gateway's log ----

/** Prints past the capture below: for what the fuzz tests report themselves. */
export const print: (...args: unknown[]) => void = console.log.bind(console);

export interface LogLine {
  at: number;
  level: string;
  text: string;
  /** The line's JSON, when it is one of the gateway's structured lines. */
  json: { msg?: string; level?: string; code?: string } | null;
}

/**
 * Captures every console line from now until restored, instead of printing it: thousands of fuzzed
 * requests log a line each (vitest's "passed-only" does not hold back what a Durable Object or a
 * background loop logs). The tests read the lines (the hub's failures) and print those around a
 * failure themselves.
 */
export function captureConsole(): { lines: LogLine[]; restore: () => void } {
  const lines: LogLine[] = [];
  const spies = (["log", "info", "debug", "warn", "error"] as const).map((level) =>
    vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
      const text = args.map(String).join(" ");
      let json: LogLine["json"] = null;
      try {
        json = text.startsWith("{") ? (JSON.parse(text) as LogLine["json"]) : null;
      } catch {
        json = null;
      }
      lines.push({ at: since(), level, text, json });
    }),
  );
  const restore = () => {
    for (const spy of spies) spy.mockRestore();
  };
  return { lines, restore };
}

// ---- requests ----

/**
 * The Worker's own fetch handler, called with a fresh execution context. Not exports.default.fetch:
 * under vitest-pool-workers each call through it costs more than the one before (3 ms at first,
 * 240 ms after 700 requests, measured here; cloudflare/workers-sdk#15446), which a fuzz run of
 * thousands of requests cannot afford. The handler is the same either way.
 */
export function workerFetch(request: Request): Promise<Response> {
  return Promise.resolve(worker.fetch(request, env, createExecutionContext()));
}

export interface SentRequest {
  method: string;
  /** Path and query, as given to the URL parser. */
  target: string;
  headers: [string, string][];
  body: Uint8Array | null;
  /** Send the body as a stream of this many chunks (no Content-Length). */
  streamChunks?: number;
}

export type Sent =
  | { kind: "unsendable"; reason: string }
  | { kind: "timeout"; phase: "headers" | "body"; elapsedMs: number; status?: number }
  | { kind: "answered"; url: URL; status: number; headers: Headers; text: string | null; elapsedMs: number };

function chunked(bytes: Uint8Array, chunks: number): ReadableStream<Uint8Array> {
  const size = Math.max(1, Math.ceil(bytes.length / chunks));
  let offset = 0;
  return new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
}

type Race<T> = { done: true; value: T } | { done: false };

async function within<T>(promise: Promise<T>, ms: number): Promise<Race<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<Race<T>>((resolve) => {
    timer = setTimeout(() => resolve({ done: false }), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise.then((value) => ({ done: true as const, value })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends a request to the Worker and reads its whole answer within `boundMs`. A request the
 * runtime will not build (a header value it refuses) is "unsendable": no caller can send it.
 */
export async function send(request: SentRequest, boundMs: number): Promise<Sent> {
  // Let the isolate's other events run first. The fuzz sends one request after another in one
  // promise chain, and a request that does no I/O (a 401, a 404, a static page) resolves in
  // microtasks: thousands of them back to back starved every macrotask — timers, and the WebSocket
  // messages between the hub and the agents in this same isolate — for up to 10 s (measured),
  // which no caller of a real Worker sees, since each request there is an event of its own.
  await new Promise((resolve) => setTimeout(resolve, 0));
  let built: Request;
  try {
    const headers = new Headers();
    for (const [name, value] of request.headers) headers.append(name, value);
    const noBody = request.method === "GET" || request.method === "HEAD" || request.body === null;
    const body = noBody
      ? undefined
      : request.streamChunks === undefined
        ? request.body
        : chunked(request.body as Uint8Array, request.streamChunks);
    built = new Request(`${BASE}${request.target}`, { method: request.method, headers, body });
  } catch (err) {
    return { kind: "unsendable", reason: String(err) };
  }
  const url = new URL(built.url);
  const started = Date.now();
  const answered = await within(workerFetch(built), boundMs);
  if (!answered.done) return { kind: "timeout", phase: "headers", elapsedMs: Date.now() - started };
  const response = answered.value;
  if (response.webSocket) {
    // An agent token and an Upgrade header make a real agent socket: close it at once.
    response.webSocket.accept();
    response.webSocket.close(1000, "fuzz");
    return {
      kind: "answered",
      url,
      status: response.status,
      headers: response.headers,
      text: null,
      elapsedMs: Date.now() - started,
    };
  }
  const read = await within(response.text(), boundMs - (Date.now() - started));
  const elapsedMs = Date.now() - started;
  if (!read.done) {
    await response.body?.cancel().catch(() => {});
    return { kind: "timeout", phase: "body", elapsedMs, status: response.status };
  }
  return {
    kind: "answered",
    url,
    status: response.status,
    headers: response.headers,
    text: request.method === "HEAD" ? null : read.value,
    elapsedMs,
  };
}

// ---- agents ----

export interface Closed {
  code: number;
  reason: string;
}

const hub = () => env.AGENT_HUB.getByName("default");

/** An agent socket on a real upgrade that sends whatever it is told, and records what comes back. */
export class AgentSocket {
  readonly received: GatewayFrame[] = [];
  readonly closed: Promise<Closed>;
  closedWith: Closed | null = null;
  /** Frames sent that reach the hub's handler (heartbeat pings are answered by the runtime). */
  sent = 0;
  #listeners: ((frame: GatewayFrame) => void)[] = [];

  private constructor(
    readonly id: string,
    readonly ws: WebSocket,
  ) {
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => {
        this.closedWith = { code: event.code, reason: event.reason };
        resolve(this.closedWith);
      });
    });
    ws.addEventListener("message", (event) => {
      if (typeof event.data !== "string" || event.data === "pong") return;
      const frame = JSON.parse(event.data) as GatewayFrame;
      this.received.push(frame);
      for (const listener of this.#listeners) listener(frame);
    });
    ws.accept();
  }

  static async open(id = uniqueId("fuzz-agent")): Promise<AgentSocket> {
    const response = await workerFetch(
      new Request(`${BASE}/agents/connect`, {
        headers: { Upgrade: "websocket", ...(await bearer({ sub: id, role: "agent", expiresIn: 3600 })) },
      }),
    );
    if (response.status !== 101 || response.webSocket === null) {
      throw new Error(`upgrade refused: ${response.status} ${await response.text()}`);
    }
    return new AgentSocket(id, response.webSocket);
  }

  onFrame(listener: (frame: GatewayFrame) => void): void {
    this.#listeners.push(listener);
  }

  /** Sends without waiting; false when the socket was already closed. */
  send(data: string | ArrayBuffer | ArrayBufferView | AgentFrame, { counted = true } = {}): boolean {
    if (this.closedWith !== null || this.ws.readyState !== WebSocket.OPEN) return false;
    try {
      this.ws.send(
        typeof data === "object" && !ArrayBuffer.isView(data) && !(data instanceof ArrayBuffer)
          ? JSON.stringify(data)
          : data,
      );
    } catch {
      return false;
    }
    if (counted) this.sent += 1;
    return true;
  }

  /**
   * Waits until the hub has handled every counted frame sent so far (or forgot this agent).
   * Needed because under vitest-pool-workers two frames sent back to back can reach the hub's
   * handler in the opposite order (helpers.ts, TestAgent.deliver).
   */
  async handled(timeoutMs = 3000): Promise<void> {
    const started = Date.now();
    const deadline = started + timeoutMs;
    let polls = 0;
    let slowest = 0;
    for (;;) {
      if (this.closedWith !== null) return;
      const asked = Date.now();
      const me = (await hub().snapshot()).agents.find((a) => a.id === this.id);
      slowest = Math.max(slowest, Date.now() - asked);
      polls += 1;
      if (me === undefined || me.framesReceived >= this.sent) {
        if (Date.now() - started > 1000) {
          this.lastSlowHandled = `handled after ${Date.now() - started} ms, ${polls} polls, slowest snapshot ${slowest} ms`;
        }
        return;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `hub did not handle frame ${this.sent} of ${this.id} in ${timeoutMs} ms (it had ${me.framesReceived}; ${polls} polls, slowest snapshot ${slowest} ms)`,
        );
      }
      await sleep(5);
    }
  }

  /** How the last slow handled() went (over 1 s), for explaining a late answer. */
  lastSlowHandled: string | null = null;

  /** The next frame of `type` received from now on, or earlier and not yet taken. */
  async next<T extends GatewayFrame["type"]>(
    type: T,
    timeoutMs = 3000,
  ): Promise<Extract<GatewayFrame, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.received.findIndex((f) => f.type === type);
      if (index >= 0) return this.received.splice(index, 1)[0] as Extract<GatewayFrame, { type: T }>;
      if (Date.now() > deadline) throw new Error(`${this.id}: no ${type} within ${timeoutMs} ms`);
      await sleep(5);
    }
  }

  close(code = 1000): void {
    try {
      this.ws.close(code, "fuzz done");
    } catch {
      // already closed
    }
  }
}

/** Waits (up to 3 s) until the hub no longer lists the agent `id`. */
export async function forgotten(id: string | undefined): Promise<boolean> {
  if (id === undefined) return true;
  const deadline = Date.now() + 3000;
  while ((await hub().snapshot()).agents.some((a) => a.id === id)) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

/** What the serving agent answers a generate with: a function of the request only. */
export function servedText(frame: GenerateFrame): string {
  const input = frame.prompt ?? frame.messages?.at(-1)?.content ?? "";
  return `served:${input.slice(0, 40)}`;
}

/**
 * A well-behaved agent: answers every `generate` with one chunk (servedText) and `done`, and
 * every `cancel` with `done` (cancelled), as the real agent does.
 */
export class ServingAgent {
  /** Per request id, what happened when (ms since start): for explaining a late answer. */
  readonly events = new Map<string, string[]>();

  private constructor(readonly socket: AgentSocket) {}

  static async start(models: string[], capacity = 8): Promise<ServingAgent> {
    const socket = await AgentSocket.open(uniqueId("fuzz-serving"));
    const agent = new ServingAgent(socket);
    socket.onFrame((frame) => void agent.#answer(frame));
    socket.send(
      helloFrame(socket.id, {
        capacity,
        models: models.map((name) => ({ name, engine: "synthetic", loaded: true })),
      }),
    );
    await socket.next("welcome");
    return agent;
  }

  get id(): string {
    return this.socket.id;
  }

  #note(id: string, what: string): void {
    const list = this.events.get(id) ?? [];
    list.push(`${what} at ${since()} ms`);
    this.events.set(id, list);
  }

  async #answer(frame: GatewayFrame): Promise<void> {
    const done = (id: string, finishReason: "stop" | "cancelled", completionTokens: number) =>
      this.socket.send({
        type: "done",
        id,
        finishReason,
        usage: { promptTokens: 1, completionTokens },
        timings: { firstTokenMs: 1, totalMs: 2 },
      });
    if (frame.type === "cancel") {
      this.#note(frame.id, `cancel (${frame.reason})`);
      done(frame.id, "cancelled", 0);
    }
    if (frame.type !== "generate") return;
    this.#note(frame.id, "generate");
    this.socket.send({ type: "chunk", id: frame.id, text: servedText(frame), tokens: 1 });
    // done after the hub handled the chunk (else it may see them in the other order); a hub that
    // takes longer than handled() waits still gets its done, and the delay is noted.
    await this.socket.handled().catch((err: unknown) => this.#note(frame.id, String(err)));
    this.#note(
      frame.id,
      `chunk handled, done sent${this.socket.lastSlowHandled ? ` (${this.socket.lastSlowHandled})` : ""}`,
    );
    this.socket.lastSlowHandled = null;
    done(frame.id, "stop", 1);
  }

  close(): void {
    this.socket.close();
  }
}

// ---- a caller beside the fuzzing ----

/**
 * Calls POST /generate (plain and streamed) for a model only the serving agent serves, and GET
 * /health, in a loop while fuzzing runs; every answer must be the right one, in time.
 */
export class WellBehavedCaller {
  readonly failures: string[] = [];
  calls = 0;
  #running = true;
  #loop: Promise<void>;

  constructor(
    readonly model: string,
    /** Explains a late answer: the serving agent's events for a request id. */
    readonly explain: (requestId: string) => string[] = () => [],
    readonly boundMs = 5000,
  ) {
    this.#loop = this.#run();
  }

  async #run(): Promise<void> {
    const sub = uniqueId("well-behaved");
    for (let i = 0; this.#running; i++) {
      // A fresh token per call, as a client renews them (the run outlives any one token's exp).
      const requestId = `${sub}-${i}`;
      const headers = {
        "Content-Type": "application/json",
        "X-Request-Id": requestId,
        ...(await bearer({ sub })),
      };
      const prompt = `well-behaved ${i}`;
      const stream = i % 3 === 2;
      const started = Date.now();
      const at = since();
      try {
        const answer = await within(
          (async () => {
            if (i % 5 === 4) {
              const health = await workerFetch(new Request(`${BASE}/health`));
              await health.body?.cancel();
              return health.status === 200 ? null : `GET /health answered ${health.status}`;
            }
            const response = await workerFetch(
              new Request(`${BASE}/generate`, {
                method: "POST",
                headers,
                body: JSON.stringify({ prompt, model: this.model, max_tokens: 4, stream }),
              }),
            );
            const text = await response.text();
            if (response.status !== 200)
              return `POST /generate answered ${response.status}: ${text.slice(0, 200)}`;
            const expected = `served:${prompt}`;
            const got = stream
              ? text.includes(`"text":${JSON.stringify(expected)}`) && text.includes("event: done")
              : (JSON.parse(text) as { text: string }).text === expected;
            return got ? null : `POST /generate (stream ${stream}) answered ${text.slice(0, 200)}`;
          })(),
          this.boundMs,
        );
        if (!answer.done) {
          this.failures.push(
            `call ${i} (${requestId}, from ${at} ms): no answer within ${this.boundMs} ms; agent: ${this.explain(requestId).join(", ") || "nothing"}`,
          );
        } else if (answer.value !== null) this.failures.push(`call ${i}: ${answer.value}`);
      } catch (err) {
        this.failures.push(`call ${i}: ${String(err)} after ${Date.now() - started} ms`);
      }
      this.calls += 1;
      await sleep(20);
    }
  }

  /** Stops the loop after its current call. */
  async stop(): Promise<{ calls: number; failures: string[] }> {
    this.#running = false;
    await this.#loop;
    return { calls: this.calls, failures: this.failures };
  }
}
