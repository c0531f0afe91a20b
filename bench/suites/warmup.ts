// JIT warm-up before anything is measured. Orchard's Worker (Hono, zod, jose, the hub) needs ~10,000
// requests before V8 has optimized its hot paths: measured at concurrency 1, its p50 falls from
// ~2.2 ms to ~1.25 ms over the first 15,000 requests, while the tiny relay is warm after a few
// hundred. Production isolates are long-lived, so the steady state is what the bench reports. The
// warm-up counts requests, not seconds, since a busy machine serves fewer per second.
import { type Bench, MODEL_4, measureHttp, type PathName, requestSpec } from "../lib/context.ts";
import { STREAM_TOKENS } from "./streaming.ts";

export async function warmUp(
  bench: Bench,
  { requests = 12_000, maxSeconds = 45 }: { requests?: number; maxSeconds?: number } = {},
): Promise<Record<PathName, number> & { seconds: number }> {
  const drive = async (path: PathName) => {
    const [short, long] = await Promise.all([
      measureHttp(
        bench,
        path,
        requestSpec(bench, path, MODEL_4, 8, false),
        { concurrency: 12, warmupMs: 0, durationMs: 5000 },
        bench.agents,
      ),
      measureHttp(
        bench,
        path,
        requestSpec(bench, path, MODEL_4, STREAM_TOKENS, true),
        { concurrency: 4, warmupMs: 0, durationMs: 5000 },
        bench.agents,
      ),
    ]);
    return short.allCompleted + long.allCompleted;
  };
  const started = performance.now();
  const served = { relay: 0, orchard: 0 };
  while (served.orchard < requests && performance.now() - started < maxSeconds * 1000) {
    const [relay, orchard] = await Promise.all([drive("relay"), drive("orchard")]);
    served.relay += relay;
    served.orchard += orchard;
  }
  return { ...served, seconds: (performance.now() - started) / 1000 };
}
