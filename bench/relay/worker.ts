// Bare relay Worker (benchmark baseline only). Speaks just enough of the agent protocol to dispatch
// a request to a connected agent round-robin and stream its chunks back as plain text. Agents join
// with `?models=a,b` on the upgrade URL; those names become the socket's hibernation tags, so a
// request for a model goes only to agents that serve it (the bench's 1-agent and 4-agent pools).
// `?burn=N` on a request adds N iterations of CPU work in the Worker (the CPU-matched relay row).
import { DurableObject } from "cloudflare:workers";

interface Env {
  RELAY: DurableObjectNamespace<BareRelay>;
  /** "1": the bench's trace switch (bench/suites/tail.ts), as the hub's BENCH_TRACE. */
  BENCH_TRACE?: string;
}

interface Pending {
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** With BENCH_TRACE: Worker entry, relay entry (= generate sent), first chunk frame (epoch ms). */
  trace?: [number, number, number];
}

// BENCH_TRACE: a self-rescheduling 5 ms timer records how late workerd runs it, as in the hub.
const TICK_MS = 5;
const RING = 2048;
const tickAt = new Float64Array(RING);
const tickLate = new Float64Array(RING);
let ticks = 0;

function startTicker(): void {
  let due = Date.now() + TICK_MS;
  const tick = () => {
    const now = Date.now();
    tickAt[ticks % RING] = now;
    tickLate[ticks++ % RING] = now - due;
    due = now + TICK_MS;
    setTimeout(tick, TICK_MS);
  };
  setTimeout(tick, TICK_MS);
}

function maxLag(from: number): number {
  let worst = 0;
  for (let i = 1; i <= Math.min(ticks, RING); i++) {
    const slot = (ticks - i) % RING;
    if ((tickAt[slot] as number) < from) break;
    worst = Math.max(worst, tickLate[slot] as number);
  }
  return worst;
}

const encoder = new TextEncoder();

export class BareRelay extends DurableObject<Env> {
  private readonly pending = new Map<string, Pending>();
  private next = 0;
  private seq = 0;
  private readonly tracing: boolean;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.tracing = env.BENCH_TRACE === "1";
    if (this.tracing) startTicker();
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }

  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() === "websocket") {
      const models = new URL(request.url).searchParams.get("models") ?? "";
      const pair = new WebSocketPair();
      this.ctx.acceptWebSocket(pair[1], models.split(",").filter(Boolean).slice(0, 10));
      return new Response(null, { status: 101, webSocket: pair[0] });
    }
    const body = (await request.json()) as { model: string; prompt: string; max_tokens: number };
    const sockets = this.ctx.getWebSockets(body.model);
    if (sockets.length === 0) return new Response("no agent", { status: 503 });
    const ws = sockets[this.next++ % sockets.length] as WebSocket;
    const id = `r${++this.seq}`;
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const pending: Pending = { writer: writable.getWriter() };
    if (this.tracing) pending.trace = [Number(request.headers.get("x-bench-entry")), Date.now(), 0];
    this.pending.set(id, pending);
    ws.send(
      JSON.stringify({
        type: "generate",
        id,
        model: body.model,
        prompt: body.prompt,
        params: { maxTokens: body.max_tokens },
      }),
    );
    return new Response(readable, { headers: { "Content-Type": "text/plain" } });
  }

  override webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): void {
    if (typeof message !== "string") return;
    const frame = JSON.parse(message) as { type: string; id?: string; text?: string; agentId?: string };
    switch (frame.type) {
      case "hello":
        ws.send(
          JSON.stringify({
            type: "welcome",
            protocol: 1,
            agentId: frame.agentId,
            sessionId: crypto.randomUUID(),
            pool: "bench",
            heartbeatIntervalMs: 15_000,
            healthIntervalMs: 60_000,
          }),
        );
        return;
      case "chunk": {
        const p = this.pending.get(frame.id as string);
        if (p?.trace && p.trace[2] === 0) p.trace[2] = Date.now();
        if (p) void p.writer.write(encoder.encode(frame.text)).catch(() => {});
        return;
      }
      case "done":
      case "error": {
        const p = this.pending.get(frame.id as string);
        this.pending.delete(frame.id as string);
        if (p?.trace) {
          // The timeline as a last line of the body (no "~" in it, so tokens still count right):
          // id;entry;relay;generate sent;first chunk;done frame;max timer lag;entry (epoch ms, as the
          // hub's; the relay has no middleware, so its Worker entry is its handler entry).
          const [entry, relay, first] = p.trace;
          const line = `\n#trace ${frame.id};${entry};${relay};${relay};${first};${Date.now()};${maxLag(Math.min(entry, relay))};${entry}\n`;
          void p.writer.write(encoder.encode(line)).catch(() => {});
        }
        if (p) void p.writer.close().catch(() => {});
        return;
      }
    }
  }
}

/** Keeps the burn loop's result alive so the JIT cannot drop the loop. */
let sink = 0;

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    // `?burn=N`: N iterations of integer work in the Worker before relaying, so the bench can give
    // the relay exactly Orchard's CPU per request and see what that CPU alone costs in req/s.
    const burn = request.url.includes("?burn=") ? Number(new URL(request.url).searchParams.get("burn")) : 0;
    let x = sink;
    for (let i = 0; i < burn; i++) x = (Math.imul(x, 31) + i) | 0;
    sink = x;
    const stub = env.RELAY.get(env.RELAY.idFromName("bench"));
    if (env.BENCH_TRACE !== "1") return stub.fetch(request);
    const traced = new Request(request);
    traced.headers.set("x-bench-entry", String(Date.now()));
    return stub.fetch(traced);
  },
} satisfies ExportedHandler<Env>;
