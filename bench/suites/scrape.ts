// The operator's reads at fleet size: GET /metrics and GET /performance/report of a pool with 50
// agents serving 20 models, after traffic to every model on every agent, on a gateway of its own.
// The 50 agents are WebSocket clients in this process that speak the agent protocol (hello,
// health with host facts, chunk + done for every generate): what a scrape costs depends on how
// many agents, models and series the hub holds, not on how the agents generate.
import WebSocket from "ws";
import { PROTOCOL_VERSION } from "../../schema/protocol.ts";
import { mintToken } from "../../scripts/lib/token.ts";
import type { Bench } from "../lib/context.ts";
import { routeThroughRegistry } from "../lib/registry-routing.ts";
import { startOrchard } from "../lib/stack.ts";
import { type Spread, spread } from "../lib/stats.ts";
import { bytes, cell, table } from "../lib/table.ts";

const AGENTS = 50;
const MODELS = 20;
/** Requests per model before the scrapes: every agent gets some of every model. */
const REQUESTS_PER_MODEL = 100;
const SCRAPES = 20;

export interface ScrapeRow {
  path: string;
  bytes: number;
  series: number;
  ms: Spread;
}

interface FakeAgent {
  socket: WebSocket;
  close(): void;
}

const modelName = (i: number) => `scrape-m${String(i + 1).padStart(2, "0")}`;

async function connectAgent(origin: string, secret: string, index: number): Promise<FakeAgent> {
  const id = `bench-scrape-${index + 1}`;
  const token = await mintToken({ secret, role: "agent", sub: id, ttlSeconds: 3600 });
  const socket = new WebSocket(`${origin.replace(/^http/, "ws")}/agents/connect`, {
    headers: { Authorization: `Bearer ${token}` },
    perMessageDeflate: false,
  });
  const host = {
    platform: "darwin",
    arch: "arm64",
    cpus: 10,
    memoryTotalBytes: 32e9,
    memoryFreeBytes: 12e9,
    memoryUsedBytes: 18e9 + index * 1e8,
    memoryPressure: "normal",
    cpuPercent: 20 + index,
    gpuPercent: 30,
  };
  const models = Array.from({ length: MODELS }, (_, m) => ({
    name: modelName(m),
    engine: "synthetic",
    loaded: true,
    footprintBytes: 1e9,
  }));
  await new Promise<void>((resolve, reject) => {
    socket.once("open", () => resolve());
    socket.once("error", reject);
  });
  const welcomed = new Promise<void>((resolve) => {
    socket.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; id?: string };
      if (frame.type === "welcome") resolve();
      if (frame.type === "generate" && frame.id !== undefined) {
        socket.send(JSON.stringify({ type: "chunk", id: frame.id, text: "tok~tok~", tokens: 2 }));
        socket.send(
          JSON.stringify({
            type: "done",
            id: frame.id,
            finishReason: "stop",
            usage: { promptTokens: 5, completionTokens: 2 },
            timings: { firstTokenMs: 0.1, totalMs: 0.2 },
          }),
        );
      }
    });
  });
  socket.send(
    JSON.stringify({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      agentId: id,
      agentVersion: "bench",
      engines: ["synthetic"],
      models,
      capacity: 8,
      host,
    }),
  );
  await welcomed;
  socket.send(JSON.stringify({ type: "health", inFlight: 0, queued: 0, tokensPerSecond: 40 + index, host }));
  return { socket, close: () => socket.close(1000, "bench done") };
}

async function timedGet(url: string, token: string): Promise<{ ms: number; body: string; status: number }> {
  const started = performance.now();
  const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
  const body = await response.text();
  return { ms: performance.now() - started, body, status: response.status };
}

export async function runScrape(bench: Bench, secret: string): Promise<{ rows: ScrapeRow[]; text: string }> {
  const orchard = await startOrchard(secret, {}, "orchard-scrape");
  const agents: FakeAgent[] = [];
  try {
    for (let i = 0; i < AGENTS; i++) agents.push(await connectAgent(orchard.directOrigin, secret, i));
    const names = Array.from({ length: MODELS }, (_, m) => modelName(m));
    const routing = await routeThroughRegistry(orchard.directOrigin, secret, names);
    bench.log(`  scrape: ${AGENTS} agents × ${MODELS} models connected; requests by name: ${routing}`);
    const user = await mintToken({ secret, role: "user", sub: "bench-scrape", ttlSeconds: 3600 });
    const admin = await mintToken({ secret, role: "admin", sub: "bench-scrape-admin", ttlSeconds: 3600 });
    const queue = names.flatMap((model) => Array.from({ length: REQUESTS_PER_MODEL }, () => model));
    let failed = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        for (let model = queue.pop(); model !== undefined; model = queue.pop()) {
          const response = await fetch(`${orchard.directOrigin}/generate`, {
            method: "POST",
            headers: { Authorization: `Bearer ${user}`, "Content-Type": "application/json" },
            body: JSON.stringify({ model, prompt: "p", max_tokens: 4 }),
          });
          if (response.status !== 200) {
            if (failed === 0)
              bench.log(
                `  scrape: traffic got ${response.status}: ${(await response.clone().text()).slice(0, 200)}`,
              );
            failed += 1;
          }
          await response.arrayBuffer();
        }
      }),
    );
    if (failed > 0) bench.log(`  scrape: ${failed} of the traffic requests failed`);
    const rows: ScrapeRow[] = [];
    for (const path of ["/metrics", "/performance/report"]) {
      const times: number[] = [];
      let body = "";
      let status = 200;
      for (let i = 0; i < SCRAPES && status === 200; i++) {
        const r = await timedGet(`${orchard.directOrigin}${path}`, admin);
        times.push(r.ms);
        body = r.body;
        status = r.status;
      }
      if (status !== 200) {
        bench.log(`  scrape: ${path} answered ${status}: ${body.slice(0, 200)}`);
        continue;
      }
      const series =
        path === "/metrics" ? body.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length : 0;
      rows.push({ path, bytes: Buffer.byteLength(body), series, ms: spread(times) });
    }
    const text = table(
      [
        `GET, one pool: ${AGENTS} agents × ${MODELS} models, ${MODELS * REQUESTS_PER_MODEL} requests before`,
        "size",
        "series",
        `time ms (median [min–max] of ${SCRAPES})`,
      ],
      rows.map((r) => [r.path, bytes(r.bytes), r.path === "/metrics" ? String(r.series) : "", cell(r.ms, 1)]),
    );
    return { rows, text };
  } finally {
    for (const a of agents) a.close();
    await orchard.stop();
  }
}
