// The load generator's own ceiling: the same client against a trivial local HTTP server (another
// process), so readers know how far below its limit every other row ran.
import { resolve } from "node:path";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";
import { spawnTs } from "../lib/children.ts";
import { closedLoop } from "../lib/closed-loop.ts";
import type { Bench } from "../lib/context.ts";
import { scaleLoop } from "../lib/context.ts";
import { LoadClient } from "../lib/http-client.ts";
import { type Spread, spread, summarize } from "../lib/stats.ts";
import { cell, table } from "../lib/table.ts";

export interface CeilingRow {
  concurrency: number;
  rps: Spread;
  p50: Spread;
  p99: Spread;
  cpuPercent: Spread;
}

export async function runCeiling(bench: Bench): Promise<{ rows: CeilingRow[]; text: string }> {
  const server = spawnTs("trivial server", resolve(REPO_ROOT, "bench/lib/trivial-server.ts"));
  try {
    const { port } = await server.waitFor<{ port: number }>("ready");
    const rows: CeilingRow[] = [];
    for (const concurrency of [1, 32, 128]) {
      const reps: { rps: number; p50: number; p99: number; cpu: number }[] = [];
      for (let rep = 0; rep < bench.reps; rep++) {
        const client = new LoadClient(`http://127.0.0.1:${port}`, concurrency);
        const self0 = process.cpuUsage();
        const t0 = performance.now();
        const r = await closedLoop(
          client.requestFn({
            method: "POST",
            path: "/",
            headers: { "content-type": "application/json" },
            body: "{}",
          }),
          scaleLoop(bench, { concurrency, warmupMs: 200, durationMs: 800, expectTokens: 8 }),
        );
        const cpu = process.cpuUsage(self0);
        const wall = performance.now() - t0;
        await client.close();
        const s = summarize(r.latencies);
        reps.push({
          rps: r.requestsPerSecond,
          p50: s.p50,
          p99: s.p99,
          cpu: ((cpu.user + cpu.system) / 1000 / wall) * 100,
        });
      }
      rows.push({
        concurrency,
        rps: spread(reps.map((r) => r.rps)),
        p50: spread(reps.map((r) => r.p50)),
        p99: spread(reps.map((r) => r.p99)),
        cpuPercent: spread(reps.map((r) => r.cpu)),
      });
      bench.log(`  ceiling c=${concurrency}: ${cell(rows[rows.length - 1]?.rps as Spread, 0)} req/s`);
    }
    const text = table(
      ["load generator vs trivial server", "req/s", "p50 ms", "p99 ms", "loadgen CPU %"],
      rows.map((r) => [
        `concurrency ${r.concurrency}`,
        cell(r.rps, 0),
        cell(r.p50, 3),
        cell(r.p99, 3),
        cell(r.cpuPercent, 0),
      ]),
    );
    return { rows, text };
  } finally {
    await server.stop();
  }
}
