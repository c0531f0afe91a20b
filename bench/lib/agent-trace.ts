// The bench agent's side of the trace switch (BENCH_TRACE=1 in the agent's env; bench/suites/tail.ts
// starts such an agent, no other suite does). Off, nothing here is installed. On, it records per
// generation, by the gateway's request id (epoch ms, performance.timeOrigin + now()):
//   got     the `generate` frame arrived (ws 'message', before the Agent parses it)
//   engine  the engine was called / yielded its first piece / ended
//   sent    the first `chunk` frame and the `done` frame went to ws.send
// plus the event loop: perf_hooks.monitorEventLoopDelay and a 5 ms self-rescheduling timer that
// keeps every stall over 10 ms with its time, so a slow request can be checked against them.
import { monitorEventLoopDelay } from "node:perf_hooks";
import WebSocket from "ws";
import type { Engine, Generation, GenerationRequest } from "../../node-agent/engines/engine.ts";

export interface AgentTraceRecord {
  id: string;
  got?: number;
  engineCalled?: number;
  firstPiece?: number;
  engineEnd?: number;
  firstChunkSent?: number;
  doneSent?: number;
  /** Time spent inside the engine's iterator (awaiting its next piece), ms: the engine's own time. */
  engineMs?: number;
  /** Time the Agent held each piece before asking for the next (coalescer, frame, ws send), summed, ms. */
  consumerMs?: number;
  pieces?: number;
}

export interface AgentTraceDump {
  records: AgentTraceRecord[];
  /** Event-loop delay (monitorEventLoopDelay, 10 ms resolution windows), ms. */
  loopDelay: { p50: number; p99: number; max: number; mean: number };
  /** Timer stalls over 10 ms: [epoch ms when the late timer ran, ms late]. */
  stalls: [number, number][];
}

const MAX_RECORDS = 200_000;
const epoch = () => performance.timeOrigin + performance.now();

/** The id in a frame's text: frames are JSON.stringify'd with `type` then `id` first. */
function frameId(text: string): string | undefined {
  const at = text.indexOf('"id":"');
  if (at < 0 || at > 40) return undefined;
  const end = text.indexOf('"', at + 6);
  return end < 0 ? undefined : text.slice(at + 6, end);
}

export class AgentTrace {
  readonly #records = new Map<string, AgentTraceRecord>();
  readonly #histogram = monitorEventLoopDelay({ resolution: 10 });
  #stalls: [number, number][] = [];
  #timer: NodeJS.Timeout | undefined;
  #current: AgentTraceRecord | undefined;

  /** Installs the hooks: ws send/receive on every socket of this process, and the loop monitors. */
  constructor() {
    const trace = this;
    const proto = WebSocket.prototype as unknown as {
      send(data: unknown, ...rest: unknown[]): void;
      emit(event: string | symbol, ...args: unknown[]): boolean;
    };
    const send = proto.send;
    proto.send = function (this: unknown, data: unknown, ...rest: unknown[]) {
      if (typeof data === "string") {
        if (data.startsWith('{"type":"chunk"')) {
          const r = trace.#record(frameId(data));
          if (r && r.firstChunkSent === undefined) r.firstChunkSent = epoch();
        } else if (data.startsWith('{"type":"done"') || data.startsWith('{"type":"error"')) {
          const r = trace.#record(frameId(data));
          if (r) r.doneSent = epoch();
        }
      }
      return send.call(this, data, ...rest);
    };
    const emit = proto.emit;
    proto.emit = function (this: unknown, event: string | symbol, ...args: unknown[]) {
      if (event === "message" && args[1] === false) {
        const head = String((args[0] as Buffer).subarray(0, 64));
        if (head.startsWith('{"type":"generate"')) {
          const r = trace.#record(frameId(head));
          if (r) r.got = epoch();
          // The Agent calls engine.generate synchronously inside this emit (session → runner).
          trace.#current = r;
          try {
            return emit.call(this, event, ...args);
          } finally {
            trace.#current = undefined;
          }
        }
      }
      return emit.call(this, event, ...args);
    };
    this.#histogram.enable();
    let due = performance.now() + 5;
    const tick = () => {
      const now = performance.now();
      if (now - due > 10 && this.#stalls.length < 100_000) this.#stalls.push([epoch(), now - due]);
      due = now + 5;
      this.#timer = setTimeout(tick, 5);
      this.#timer.unref();
    };
    this.#timer = setTimeout(tick, 5);
    this.#timer.unref();
  }

  #record(id: string | undefined): AgentTraceRecord | undefined {
    if (id === undefined) return undefined;
    let r = this.#records.get(id);
    if (r === undefined && this.#records.size < MAX_RECORDS) {
      r = { id };
      this.#records.set(id, r);
    }
    return r;
  }

  /** The engine, wrapped so its call, first piece and end are recorded under the request's id. */
  wrap(engine: Engine): Engine {
    const trace = this;
    return new Proxy(engine, {
      get(target, prop, receiver) {
        if (prop !== "generate") return Reflect.get(target, prop, receiver);
        return (request: GenerationRequest, signal: AbortSignal): Generation => {
          const r = trace.#current;
          const inner = target.generate(request, signal);
          if (r === undefined) return inner;
          r.engineCalled = epoch();
          r.engineMs = 0;
          r.consumerMs = 0;
          r.pieces = 0;
          const result = inner.result.finally(() => {
            r.engineEnd = epoch();
          });
          result.catch(() => {});
          return {
            result,
            async *[Symbol.asyncIterator]() {
              const it = inner[Symbol.asyncIterator]();
              try {
                for (;;) {
                  const t0 = performance.now();
                  const next = await it.next();
                  r.engineMs = (r.engineMs as number) + performance.now() - t0;
                  if (next.done) return;
                  r.firstPiece ??= epoch();
                  r.pieces = (r.pieces as number) + 1;
                  const held = performance.now();
                  yield next.value;
                  r.consumerMs = (r.consumerMs as number) + performance.now() - held;
                }
              } finally {
                await it.return?.();
              }
            },
          };
        };
      },
    });
  }

  /** What was recorded since the last dump (and resets it). */
  dump(): AgentTraceDump {
    const h = this.#histogram;
    const ms = (ns: number) => ns / 1e6;
    const out: AgentTraceDump = {
      records: [...this.#records.values()],
      loopDelay: { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), mean: ms(h.mean) },
      stalls: this.#stalls,
    };
    this.#records.clear();
    this.#stalls = [];
    h.reset();
    return out;
  }
}
