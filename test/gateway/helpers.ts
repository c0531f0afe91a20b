// Shared helpers for the gateway suite: tokens, requests to the Worker, and a scripted agent that
// connects over a real WebSocket upgrade, the way a node agent does.
import { env, exports } from "cloudflare:workers";
import { SignJWT } from "jose";
import { afterEach } from "vitest";
import type { Role } from "../../schema/api.ts";
import type { AgentFrame, GatewayFrame, HelloFrame } from "../../schema/protocol.ts";
import { PROTOCOL_VERSION } from "../../schema/protocol.ts";

export const BASE = "https://gateway.test";

export type { Role } from "../../schema/api.ts";

export interface TokenOptions {
  sub?: string;
  role?: Role | string;
  /** Seconds from now; negative for an expired token; null for no exp claim. */
  expiresIn?: number | null;
  secret?: string;
  kid?: string;
}

export async function token({
  sub = "test-user",
  role = "user",
  expiresIn = 300,
  secret = env.JWT_SECRET,
  kid,
}: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ role }).setProtectedHeader(kid ? { alg: "HS256", kid } : { alg: "HS256" });
  jwt.setSubject(sub).setIssuedAt(now);
  if (expiresIn !== null) jwt.setExpirationTime(now + expiresIn);
  return jwt.sign(new TextEncoder().encode(secret));
}

export const bearer = async (options: TokenOptions = {}) => ({
  Authorization: `Bearer ${await token(options)}`,
});

export function gatewayFetch(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(`${BASE}${path}`, init));
}

export async function postJson(path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return gatewayFetch(path, {
    method: "POST",
    ...init,
    headers: { "Content-Type": "application/json", ...(await bearer()), ...init.headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Truthy<T> = Exclude<T, null | undefined | false | 0 | "">;

/** Polls until `check` returns a truthy value or the timeout passes. */
export async function waitFor<T>(
  check: () => Promise<T> | T,
  timeoutMs = 3000,
  what = "condition",
): Promise<Truthy<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value as Truthy<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

let agentCounter = 0;
export const uniqueId = (prefix: string) => `${prefix}-${++agentCounter}-${crypto.randomUUID().slice(0, 8)}`;

export function helloFrame(agentId: string, overrides: Partial<HelloFrame> = {}): HelloFrame {
  return {
    type: "hello",
    protocol: PROTOCOL_VERSION,
    agentId,
    agentVersion: "0.1.0-test",
    engines: ["synthetic"],
    models: [{ name: "tiny", engine: "synthetic", loaded: true }],
    capacity: 1,
    host: { platform: "linux", arch: "x64", cpus: 2, memoryTotalBytes: 8e9, memoryFreeBytes: 4e9 },
    ...overrides,
  };
}

export interface Closed {
  code: number;
  reason: string;
}

/** A scripted agent on a real upgraded socket. */
export class TestAgent {
  readonly frames: GatewayFrame[] = [];
  readonly closed: Promise<Closed>;
  #waiters: (() => void)[] = [];

  private constructor(
    readonly id: string,
    readonly ws: WebSocket,
  ) {
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => resolve({ code: event.code, reason: event.reason }));
    });
    ws.addEventListener("message", (event) => {
      if (event.data === "pong") return; // heartbeat answered by the runtime, not a frame
      this.frames.push(JSON.parse(event.data as string) as GatewayFrame);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    ws.accept();
  }

  /** Upgrades /agents/connect; throws with the response if the gateway refused. */
  static async connect(id = uniqueId("agent"), { name }: { name?: string } = {}): Promise<TestAgent> {
    const response = await TestAgent.upgrade(id, name);
    if (response.status !== 101 || response.webSocket === null) {
      throw new Error(`upgrade refused: ${response.status} ${await response.text()}`);
    }
    return new TestAgent(id, response.webSocket);
  }

  static async upgrade(id: string, name?: string, role: Role = "agent"): Promise<Response> {
    const query = name === undefined ? "" : `?name=${encodeURIComponent(name)}`;
    return gatewayFetch(`/agents/connect${query}`, {
      headers: { Upgrade: "websocket", ...(await bearer({ sub: id, role })) },
    });
  }

  /** Connects, says hello, and waits for welcome. */
  static async ready(overrides: Partial<HelloFrame> = {}, id = uniqueId("agent")): Promise<TestAgent> {
    const agent = await TestAgent.connect(id);
    agent.send(helloFrame(id, overrides));
    await agent.next("welcome");
    return agent;
  }

  /** Frames sent so far (the hub counts the ones it handled: see deliver()). */
  #sent = 0;

  /** Sends without waiting; for frames after which the hub closes the socket. */
  send(frame: AgentFrame | Record<string, unknown> | string): void {
    this.#sent += 1;
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /**
   * Sends and waits until the hub has handled the frame. Needed for frames whose order matters:
   * under vitest-pool-workers every Durable Object event first makes a round trip to the runner
   * object (to import the Worker module), so two frames sent back to back can reach the hub's
   * webSocketMessage in the opposite order. In production the handler runs without awaiting.
   */
  async deliver(frame: AgentFrame | Record<string, unknown>): Promise<void> {
    this.send(frame);
    const sent = this.#sent;
    await waitFor(
      async () => {
        const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
        const { agents } = (await response.json()) as { agents: { id: string; framesReceived: number }[] };
        const me = agents.find((a) => a.id === this.id);
        return me === undefined || me.framesReceived >= sent;
      },
      3000,
      `the hub to handle frame ${sent} of ${this.id}`,
    );
  }

  /** The next unread frame of `type` (frames of other types stay unread). */
  async next<T extends GatewayFrame["type"]>(
    type: T,
    timeoutMs = 3000,
  ): Promise<Extract<GatewayFrame, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.frames.findIndex((f) => f.type === type);
      if (index >= 0) return this.frames.splice(index, 1)[0] as Extract<GatewayFrame, { type: T }>;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`agent ${this.id}: no ${type} frame within ${timeoutMs} ms`);
      await Promise.race([new Promise<void>((wake) => this.#waiters.push(wake)), sleep(remaining)]);
    }
  }

  /**
   * Proves every frame the hub sent this agent before now has arrived, without waiting "long
   * enough": a chunk for an id the hub never knew makes it answer `cancel` (an orphan), and frames
   * on one socket arrive in order. The agent then answers the cancel, which frees the slot again.
   */
  async barrier(): Promise<void> {
    const id = uniqueId("barrier");
    this.send({ type: "chunk", id, text: "", tokens: 0 });
    const deadline = Date.now() + 3000;
    while (!this.frames.some((f) => f.type === "cancel" && f.id === id)) {
      if (Date.now() > deadline) throw new Error(`agent ${this.id}: no barrier cancel within 3000 ms`);
      await Promise.race([new Promise<void>((wake) => this.#waiters.push(wake)), sleep(50)]);
    }
    this.frames.splice(
      this.frames.findIndex((f) => f.type === "cancel" && f.id === id),
      1,
    );
    await this.done(id, { promptTokens: 0, completionTokens: 0 }, "cancelled");
  }

  /** The frames of `type` the hub sent so far and nobody read, after a barrier(). */
  async unread<T extends GatewayFrame["type"]>(type: T): Promise<Extract<GatewayFrame, { type: T }>[]> {
    await this.barrier();
    return this.frames.filter((f): f is Extract<GatewayFrame, { type: T }> => f.type === type);
  }

  chunk(id: string, text: string, tokens = 1): Promise<void> {
    return this.deliver({ type: "chunk", id, text, tokens });
  }

  done(id: string, usage = { promptTokens: 3, completionTokens: 2 }, finishReason = "stop"): Promise<void> {
    return this.deliver({ type: "done", id, finishReason, usage, timings: { firstTokenMs: 1, totalMs: 2 } });
  }

  close(code = 1000): void {
    try {
      this.ws.close(code, "test done");
    } catch {
      // already closed
    }
  }
}

/** Reads an SSE body into {event, data} messages until it ends. */
export async function readSse(response: Response): Promise<{ event: string | undefined; data: string }[]> {
  const text = await response.text();
  return parseSse(text);
}

export function parseSse(text: string): { event: string | undefined; data: string }[] {
  return text
    .split("\n\n")
    .filter((block) => block.trim() !== "")
    .map((block) => {
      let event: string | undefined;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      return { event, data: data.join("\n") };
    });
}

/** Incrementally reads SSE messages from a streaming body. */
export class SseReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }

  async next(): Promise<{ event: string | undefined; data: string } | null> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end + 2);
        this.#buffer = this.#buffer.slice(end + 2);
        return parseSse(block)[0] ?? null;
      }
      const { done, value } = await this.#reader.read();
      if (done) return null;
      this.#buffer += value;
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

/** Waits until the hub no longer lists any agent (tests share one hub per file). */
export async function waitForNoAgents(): Promise<void> {
  await waitFor(
    async () => {
      const response = await gatewayFetch("/agents", { headers: await bearer({ role: "admin" }) });
      const body = (await response.json()) as { agents: unknown[] };
      return body.agents.length === 0;
    },
    3000,
    "the hub to drop every agent",
  );
}

/**
 * The agents a test file opens, closed after each test (and the hub seen empty again), so one
 * test's agents never serve the next test's requests.
 */
export function trackedAgents() {
  const open: TestAgent[] = [];
  afterEach(async () => {
    for (const agent of open.splice(0)) agent.close();
    await waitForNoAgents();
  });
  const adopt = (agent: TestAgent): TestAgent => {
    open.push(agent);
    return agent;
  };
  /** A ready agent serving `models` (synthetic engine) with `capacity` slots. */
  const serving = async (models: string | string[], capacity = 1, id?: string): Promise<TestAgent> => {
    const names = typeof models === "string" ? [models] : models;
    return adopt(
      await TestAgent.ready(
        { capacity, models: names.map((name) => ({ name, engine: "synthetic", loaded: true })) },
        id,
      ),
    );
  };
  return { adopt, serving };
}
