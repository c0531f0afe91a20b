// The load generator's side of the tail traces (bench/suites/tail.ts): one request's send, first
// byte and end (epoch ms), the gateway's timeline read from the answer (Orchard: the hub's
// x-orchard-bench-trace header; the relay: its `#trace` last body line), joined with the agent's
// records by request id, and cut into the segments a request's time went to.
import { Pool } from "undici";
import { TRACE_HEADER } from "../../gateway/hub/bench-trace.ts";
import type { AgentTraceRecord } from "./agent-trace.ts";
import { countTokens, type HttpRequestSpec } from "./http-client.ts";

export interface ClientTrace {
  send: number;
  /** undici handed the request to a connection and is about to write it (its onConnect). */
  written?: number;
  firstByte?: number;
  end: number;
  tokens: number;
  status: number;
  /** `id;received;created;dispatched;firstChunk;answered;maxTimerLag;workerEntry` as the gateway wrote it. */
  gateway?: string;
}

/** The load generator's own timer stalls during a traced loop: [epoch ms the late timer ran, ms late]. */
export interface TracedLoopResult {
  traces: ClientTrace[];
  stalls: [number, number][];
}

const epoch = () => performance.timeOrigin + performance.now();
const TRACE_LINE = "\n#trace ";

/** Closed loop at `concurrency` for `durationMs` (after `warmupMs`), keeping every measured request's trace. */
export async function tracedLoop(
  origin: string,
  spec: HttpRequestSpec,
  o: { concurrency: number; warmupMs: number; durationMs: number },
): Promise<TracedLoopResult> {
  // A 5 ms self-rescheduling timer in the load generator: a stall here delays sends and reads, and
  // would otherwise be booked to the first segment (client → Worker).
  const stalls: [number, number][] = [];
  let due = epoch() + 5;
  let timer: NodeJS.Timeout;
  const tick = () => {
    const now = epoch();
    if (now - due > 10) stalls.push([now, now - due]);
    due = now + 5;
    timer = setTimeout(tick, 5);
  };
  timer = setTimeout(tick, 5);
  const pool = new Pool(origin, {
    connections: o.concurrency,
    pipelining: 1,
    keepAliveTimeout: 4_000,
    keepAliveMaxTimeout: 4_000,
  });
  const start = epoch();
  const from = start + o.warmupMs;
  const until = from + o.durationMs;
  const out: ClientTrace[] = [];
  let n = 0;
  const one = () =>
    new Promise<ClientTrace>((resolve, reject) => {
      const t: ClientTrace = { send: epoch(), end: 0, tokens: 0, status: 0 };
      let tail = "";
      const i = n++;
      const base = spec.perRequestHeaders?.[i % spec.perRequestHeaders.length] ?? spec.headers;
      // BENCH_TAIL_CONNECTION_CLOSE=1: a new connection per request (the keep-alive experiment).
      const headers =
        process.env.BENCH_TAIL_CONNECTION_CLOSE === "1" ? { ...base, connection: "close" } : base;
      pool.dispatch(
        { path: spec.path, method: spec.method, headers, body: spec.body },
        {
          onConnect() {
            t.written = epoch();
          },
          onHeaders(status: number, raw: Buffer[]) {
            t.status = status;
            for (let h = 0; h < raw.length; h += 2)
              if (String(raw[h]).toLowerCase() === TRACE_HEADER) t.gateway = String(raw[h + 1]);
            return true;
          },
          onData(chunk: Buffer) {
            t.firstByte ??= epoch();
            t.tokens += countTokens(chunk);
            tail = (tail + chunk.toString()).slice(-200);
            return true;
          },
          onComplete() {
            t.end = epoch();
            const at = tail.lastIndexOf(TRACE_LINE);
            if (at >= 0) t.gateway = tail.slice(at + TRACE_LINE.length).trim();
            resolve(t);
          },
          onError: reject,
        },
      );
    });
  const worker = async () => {
    while (epoch() < until) {
      const t = await one().catch(() => undefined);
      if (t && t.send >= from && t.end <= until) out.push(t);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  clearTimeout(timer);
  await pool.close();
  return { traces: out, stalls };
}

export const SEGMENTS = [
  "client: pool → socket write",
  "client → Worker fetch",
  "Worker fetch → handler",
  "client → Worker handler",
  "Worker → hub",
  "hub: queue + dispatch",
  "generate: hub → agent",
  "agent: frame → engine",
  "engine: first piece",
  "agent: piece → chunk sent",
  "chunk: agent → hub",
  "hub: first chunk → answer",
  "answer → client end",
] as const;
export type Segment = (typeof SEGMENTS)[number];

export interface Joined {
  totalMs: number;
  segments: Partial<Record<Segment, number>>;
  /** The gateway's worst timer lag during the request, ms. */
  workerdTimerLagMs?: number;
  /** Agent timer stalls (> 10 ms) overlapping the request, worst, ms. */
  agentStallMs: number;
  /** Load generator timer stalls (> 10 ms) overlapping the request, worst, ms. */
  loadgenStallMs: number;
}

/** The worst stall in `stalls` ([epoch ms the late timer ran, ms late]) overlapping [from, to]. */
function worstStall(stalls: readonly [number, number][], from: number, to: number): number {
  let worst = 0;
  for (const [at, late] of stalls) if (at >= from && at - late <= to) worst = Math.max(worst, late);
  return worst;
}

/** One request's segments; a missing agent record merges its segments into "hub → first chunk". */
export function join(
  t: ClientTrace,
  agent: Map<string, AgentTraceRecord>,
  stalls: [number, number][],
  loadgenStalls: [number, number][] = [],
): Joined {
  const seg: Partial<Record<Segment, number>> = {};
  let lag: number | undefined;
  const fields = t.gateway?.split(";");
  if (fields && fields.length >= 7) {
    const [id, received, created, dispatched, firstChunk, answered, timerLag, entry] = fields as string[];
    const v = (s: string | undefined) => (s === undefined || s === "" ? undefined : Number(s));
    const [w, h, g, f, a] = [v(received), v(created), v(dispatched), v(firstChunk), v(answered)];
    lag = v(timerLag);
    const r = agent.get(id as string);
    const put = (name: Segment, from?: number, to?: number) => {
      if (from !== undefined && to !== undefined) seg[name] = to - from;
    };
    const e = v(entry);
    if (e === undefined) put("client → Worker handler", t.send, w);
    else {
      put("client: pool → socket write", t.send, t.written);
      put("client → Worker fetch", t.written ?? t.send, e);
      put("Worker fetch → handler", e, w);
    }
    put("Worker → hub", w, h);
    put("hub: queue + dispatch", h, g);
    if (r?.got !== undefined && r.firstChunkSent !== undefined) {
      put("generate: hub → agent", g, r.got);
      put("agent: frame → engine", r.got, r.engineCalled);
      put("engine: first piece", r.engineCalled, r.firstPiece);
      put("agent: piece → chunk sent", r.firstPiece, r.firstChunkSent);
      put("chunk: agent → hub", r.firstChunkSent, f);
    } else put("generate: hub → agent", g, f);
    put("hub: first chunk → answer", f, a);
    put("answer → client end", a, t.end);
  }
  return {
    totalMs: t.end - t.send,
    segments: seg,
    ...(lag === undefined ? {} : { workerdTimerLagMs: lag }),
    agentStallMs: worstStall(stalls, t.send, t.end),
    loadgenStallMs: worstStall(loadgenStalls, t.send, t.end),
  };
}

/** The segment that took the most of a request's time. */
export function dominant(j: Joined): Segment | undefined {
  let best: Segment | undefined;
  for (const name of SEGMENTS) {
    const ms = j.segments[name];
    if (ms !== undefined && (best === undefined || ms > (j.segments[best] as number))) best = name;
  }
  return best;
}
