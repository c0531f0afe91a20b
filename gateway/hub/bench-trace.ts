// A bench-only trace switch (`BENCH_TRACE=1` in the hub's env; bench/suites/tail.ts sets it on a
// Worker of its own, production never does). Off, it costs one boolean test per response. On, a
// non-streamed answer carries its timeline in a header — the route handler's entry, the hub taking
// the request, `generate` leaving, the first chunk frame, the answer resolved (epoch ms, workerd's
// clock) — and a self-rescheduling timer measures how late workerd runs timers, so a slow request
// can be checked against the event-loop lag it lived through.

export const TRACE_HEADER = "x-orchard-bench-trace";

/** Set once, by the hub's constructor, from its env. */
export let benchTraceOn = false;

const TICK_MS = 5;
/** Ticks kept: 2,048 × ≥ 5 ms ≥ 10 s of history, more than any traced request lives. */
const RING = 2048;
const tickAt = new Float64Array(RING);
const tickLate = new Float64Array(RING);
let ticks = 0;

export function enableBenchTrace(env: unknown): void {
  if (benchTraceOn || (env as { BENCH_TRACE?: unknown }).BENCH_TRACE !== "1") return;
  benchTraceOn = true;
  let due = Date.now() + TICK_MS;
  const tick = () => {
    const now = Date.now();
    const slot = ticks++ % RING;
    tickAt[slot] = now;
    tickLate[slot] = now - due;
    due = now + TICK_MS;
    setTimeout(tick, TICK_MS);
  };
  setTimeout(tick, TICK_MS);
}

/** The latest a timer ran, in ms past its due time, among ticks in [from, to]. */
export function maxTimerLagMs(from: number, to: number): number {
  let worst = 0;
  const n = Math.min(ticks, RING);
  for (let i = 1; i <= n; i++) {
    const slot = (ticks - i) % RING;
    const at = tickAt[slot] as number;
    if (at < from) break;
    if (at <= to) worst = Math.max(worst, tickLate[slot] as number);
  }
  return worst;
}

/**
 * The Worker's fetch() with the time it was entered appended to the trace header (`…;workerEntry`),
 * so the time before the route handler splits into "before the Worker ran" (load generator,
 * sockets, workerd's intake) and "in the middleware chain". Only the traced Worker calls it.
 */
export async function tracedFetch(fetch: () => Response | Promise<Response>): Promise<Response> {
  const entered = Date.now();
  const response = await fetch();
  const value = response.headers.get(TRACE_HEADER);
  if (value !== null) {
    try {
      response.headers.set(TRACE_HEADER, `${value};${entered}`);
    } catch {
      // Immutable headers (an upgrade): not a traced answer.
    }
  }
  return response;
}

/** `id;received;created;dispatched;firstChunk;answered;maxTimerLag` (epoch ms; empty when unknown). */
export function traceValue(
  id: string,
  job: {
    readonly createdAt: number;
    readonly dispatchedAt: number | null;
    readonly firstChunkAt: number | null;
    readonly request: { readonly response: { readonly receivedAt: number } };
  },
): string {
  const now = Date.now();
  const received = job.request.response.receivedAt;
  return [
    id,
    received,
    job.createdAt,
    job.dispatchedAt ?? "",
    job.firstChunkAt ?? "",
    now,
    maxTimerLagMs(Math.min(received, job.createdAt), now),
  ].join(";");
}
