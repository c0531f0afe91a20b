// Bare relay Worker (benchmark baseline only). Speaks just enough of the agent protocol to dispatch
// a request to a connected agent round-robin and stream its chunks back as plain text. Agents join
// with `?models=a,b` on the upgrade URL; those names become the socket's hibernation tags, so a
// request for a model goes only to agents that serve it (the bench's 1-agent and 4-agent pools).
// `?burn=N` on a request adds N iterations of CPU work in the Worker (the CPU-matched relay row).
import { DurableObject } from "cloudflare:workers";

interface Env {
  RELAY: DurableObjectNamespace<BareRelay>;
}

interface Pending {
  writer: WritableStreamDefaultWriter<Uint8Array>;
}

const encoder = new TextEncoder();

export class BareRelay extends DurableObject<Env> {
  private readonly pending = new Map<string, Pending>();
  private next = 0;
  private seq = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
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
    this.pending.set(id, { writer: writable.getWriter() });
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
        if (p) void p.writer.write(encoder.encode(frame.text)).catch(() => {});
        return;
      }
      case "done":
      case "error": {
        const p = this.pending.get(frame.id as string);
        this.pending.delete(frame.id as string);
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
    return env.RELAY.get(env.RELAY.idFromName("bench")).fetch(request);
  },
} satisfies ExportedHandler<Env>;
