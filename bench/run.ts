// `npm run bench`: Orchard's performance benchmark. Starts the bare relay Worker and Orchard's
// gateway Worker in workerd, benchmark agents as real processes, then measures (each comparison
// side by side, interleaved, repeated): the load generator's ceiling, overhead per request, streaming
// throughput and time to first token, the agent with llama.cpp, and growth to 1,000 streams.
// Prints tables and writes bench-results/<date>.json. See bench/README.md.
//
// Flags: --reps N (default 3)  --only a,b (ceiling,overhead,peers,everything,streaming,llama,mlx,structured,growth,scrape,micro,profile,variants)
//        --profile (also CPU profiles and prototyped optimizations on copies; adds ~4 min)
//        --time-scale X (multiplies every measuring window)
//        --against REF (this checkout's gateway vs the one at git REF, side by side: a before/after)
//        --compare REF2 (with --against: the gateway at REF2 instead of this checkout's)
//        --rollouts on|off (default on: a canary and an A/B test run on the benchmarked models)
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { resolve } from "node:path";
import { DEMO_MODEL_NAME, ensureDemoModel } from "../node-agent/demo-model.ts";
import { REPO_ROOT } from "../scripts/lib/local-gateway.ts";
import { mintToken } from "../scripts/lib/token.ts";
import { killAllChildren, spawnTs } from "./lib/children.ts";
import { type Bench, modelNames, syntheticEngine } from "./lib/context.ts";
import { ForeignLoadMonitor, formatFacts, machineFacts } from "./lib/facts.ts";
import { cpuTimeMs, descendantsOf } from "./lib/procs.ts";
import { routeThroughRegistry } from "./lib/registry-routing.ts";
import {
  benchRollouts,
  describeRollouts,
  formatTraffic,
  rolloutTraffic,
  stopRollouts,
} from "./lib/rollouts.ts";
import {
  ALL_OFF_VARS,
  newSecret,
  type RunningAgent,
  startAgent,
  startOrchard,
  startRelay,
} from "./lib/stack.ts";
import { num, type TargetCheck, table, targetsTable } from "./lib/table.ts";
import type { MicroCase } from "./micro/run.ts";
import { runAgentPath } from "./suites/agent-path.ts";
import { runCeiling } from "./suites/ceiling.ts";
import { runEverything } from "./suites/everything.ts";
import { runGrowth } from "./suites/growth.ts";
import { runLlama } from "./suites/llama.ts";
import { runMlx } from "./suites/mlx.ts";
import { runOverhead } from "./suites/overhead.ts";
import { runPeers } from "./suites/peers.ts";
import { runProfile } from "./suites/profile.ts";
import { runScrape } from "./suites/scrape.ts";
import { runStreaming } from "./suites/streaming.ts";
import { runStructured } from "./suites/structured.ts";
import { runTail } from "./suites/tail.ts";
import { runVariants } from "./suites/variants.ts";
import { warmUp } from "./suites/warmup.ts";

const ALL = [
  "ceiling",
  "overhead",
  "peers",
  "everything",
  "tail",
  "streaming",
  "llama",
  "agent-path",
  "mlx",
  "structured",
  "growth",
  "scrape",
  "micro",
] as const;
type Suite = (typeof ALL)[number] | "profile" | "variants";

function parseArgs(argv: string[]) {
  const get = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const reps = Number(get("--reps") ?? 3);
  const timeScale = Number(get("--time-scale") ?? 1);
  let suites: Suite[] = (get("--only")?.split(",") as Suite[] | undefined) ?? [...ALL];
  if (argv.includes("--profile")) suites = [...new Set<Suite>([...suites, "profile", "variants"])];
  const against = get("--against");
  if (argv.includes("--against") && (against === undefined || against.startsWith("--")))
    throw new Error("--against needs a git ref, e.g. --against HEAD~1");
  if (against !== undefined && !suites.includes("variants")) suites = [...suites, "variants"];
  const compare = get("--compare");
  if (compare !== undefined && against === undefined) throw new Error("--compare needs --against");
  const rolloutsFlag = get("--rollouts") ?? "on";
  if (rolloutsFlag !== "on" && rolloutsFlag !== "off") throw new Error("--rollouts must be on or off");
  if (!(Number.isInteger(reps) && reps >= 1)) throw new Error("--reps must be a positive integer");
  return { reps, timeScale, suites, against, compare, rollouts: rolloutsFlag === "on" };
}

async function main(): Promise<void> {
  const started = performance.now();
  const args = parseArgs(process.argv.slice(2));
  const facts = machineFacts();
  const out: string[] = [];
  const print = (text = "") => {
    out.push(text);
    process.stdout.write(`${text}\n`);
  };
  const log = (line: string) =>
    process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(0).padStart(3)}s] ${line}\n`);

  print("Orchard benchmark");
  print(formatFacts(facts));
  print(
    `reps        ${args.reps} per comparison, paths interleaved ABBA; numbers are median [min–max] over reps`,
  );
  print();

  const secret = newSecret();
  log("starting the bare relay and Orchard in workerd…");
  const wantsEverything = args.suites.includes("everything");
  const [relay, orchard, orchardOff] = await Promise.all([
    startRelay(),
    startOrchard(secret),
    // The same build with every request-path feature off, for the everything suite.
    wantsEverything ? startOrchard(secret, { vars: ALL_OFF_VARS }, "orchard-off") : undefined,
  ]);
  log(
    `relay ${relay.directOrigin} (workerd ${relay.userWorkerdPid}), Orchard ${orchard.directOrigin} (workerd ${orchard.userWorkerdPid})`,
  );

  const wantsLlama = args.suites.includes("llama");
  const modelPath = wantsLlama ? await ensureDemoModel(resolve(REPO_ROOT, ".cache/orchard-test")) : "";
  log("starting agents…");
  // With rollouts, agents also announce MODEL_1 and MODEL_4 as name:CANDIDATE_VERSION.
  const engine = (first: boolean) => syntheticEngine(first, args.rollouts);
  const models = (first: boolean) => modelNames(engine(first));
  const agents: RunningAgent[] = await Promise.all(
    [0, 1, 2, 3].map((i) =>
      startAgent(
        `bench-synthetic-${i + 1}`,
        secret,
        engine(i === 0),
        {
          relay,
          orchard,
          models: models(i === 0),
          ...(orchardOff ? { more: [{ label: "orchard-off", worker: orchardOff }] } : {}),
        },
        { loopback: i === 0 },
      ),
    ),
  );
  const llama = wantsLlama
    ? await startAgent(
        "bench-llama",
        secret,
        { kind: "llamacpp", modelName: DEMO_MODEL_NAME, modelPath, threads: 1 },
        { orchard, models: [DEMO_MODEL_NAME] },
        { loopback: true, capacity: 4 },
      )
    : undefined;
  log("agents connected");
  // Requests by name resolve through the registry's routing table, as in production.
  const servedModels = [...new Set([...models(true), ...models(false), ...(llama ? [DEMO_MODEL_NAME] : [])])];
  const routing = await routeThroughRegistry(orchard.directOrigin, secret, servedModels);
  log(`requests by name: ${routing} (${servedModels.join(", ")})`);
  // The canary on the model of the headline overhead figure, the A/B test on another (one per model).
  const rollouts = await benchRollouts(orchard.directOrigin, secret, routing, args.rollouts);
  log(`rollouts: ${rollouts.active ? `${rollouts.canary.id}, ${rollouts.abTest.id}` : rollouts.reason}`);
  print(`rollouts    ${describeRollouts(rollouts)}`);
  print();

  const bench: Bench = {
    relay,
    orchard,
    ...(orchardOff ? { orchardOff } : {}),
    agents,
    ...(llama ? { llama } : {}),
    userToken: await mintToken({ secret, role: "user", sub: "bench", ttlSeconds: 6 * 3600 }),
    reps: args.reps,
    rollouts: args.rollouts,
    timeScale: args.timeScale,
    log,
  };

  const results: Record<string, unknown> = { facts, args, rolloutsActive: describeRollouts(rollouts) };
  const monitor = new ForeignLoadMonitor(() => [process.pid, ...descendantsOf(process.pid)], cpuTimeMs);
  const stamp = facts.date.replace(/[:.]/g, "-");
  const checks: TargetCheck[] = [];
  const section = (title: string, text: string) => {
    print(`== ${title} ==`);
    print(text);
    print();
  };
  try {
    if (
      args.suites.some((s) =>
        ["overhead", "peers", "everything", "tail", "streaming", "llama", "growth"].includes(s),
      )
    ) {
      log("warming up both Workers (JIT)…");
      const warmed = await warmUp(bench);
      print(
        `warm-up     ${warmed.seconds.toFixed(0)} s of mixed traffic first: ${warmed.orchard} requests through Orchard, ${warmed.relay} through the relay`,
      );
      print();
    }
    if (args.suites.includes("ceiling")) {
      log("load generator ceiling…");
      const r = await runCeiling(bench);
      results.ceiling = r.rows;
      section(
        "Load generator ceiling (undici, keep-alive, no pipelining; trivial server in another process)",
        r.text,
      );
    }
    if (args.suites.includes("overhead")) {
      log("overhead per request…");
      const r = await runOverhead(bench);
      results.overhead = {
        rows: r.rows,
        ownCostP50: r.ownCostP50,
        rpsDrop: r.rpsDrop,
        cpuMatched: r.cpuMatched,
        framesPerRequest: r.framesPerRequest,
      };
      checks.push(...r.checks);
      section("Overhead per request (same agent process and engine on every path)", r.text);
    }
    if (args.suites.includes("peers")) {
      log("peers side by side (one synthetic token source over HTTP)…");
      const r = await runPeers(bench, secret);
      results.peers = { rows: r.rows, ratios: r.ratios, failedToStart: r.failedToStart };
      checks.push(...r.checks);
      section("Peers in front of the same token source (OpenAI chat completions)", r.text);
    }
    if (args.suites.includes("everything")) {
      log("every request-path feature on vs off…");
      const r = await runEverything(bench, secret);
      results.everything = {
        rows: r.rows,
        ownCostP50: r.ownCostP50,
        rpsDrop: r.rpsDrop,
        featuresCpuMs: r.featuresCpuMs,
        featureShares: r.profile?.shares ?? r.profileError,
        unattributed: r.profile?.rest,
      };
      checks.push(...r.checks);
      section(
        "Every request-path feature on, against all off (the same gateway build) and the relay",
        r.text,
      );
    }
    if (args.suites.includes("tail")) {
      log("the concurrency-32 tail, with traces…");
      const r = await runTail(bench, secret);
      results.tail = { untraced: r.untraced, traced: r.traced, agentLoop: r.agentLoop };
      section("The concurrency-32 tail: p99/p99.9 and per-request traces across every hop", r.text);
    }
    if (args.suites.includes("streaming")) {
      log("streaming…");
      const r = await runStreaming(bench);
      results.streaming = { rows: r.rows, ttft: r.ttft, framesPerStream: r.framesPerStream };
      checks.push(...r.checks);
      section("Streaming relay", r.text);
    }
    if (args.suites.includes("llama")) {
      log("agent with llama.cpp…");
      const r = await runLlama(bench, DEMO_MODEL_NAME);
      results.llama = { rows: r.rows, gatewayCpuMsPerGeneration: r.gatewayCpuMsPerGeneration };
      checks.push(...r.checks);
      section("The agent with a real engine (llama.cpp, demo model)", r.text);
    }
    if (args.suites.includes("agent-path")) {
      log("the agent path: llama.cpp through the Agent vs direct, ABBA pairs…");
      const r = await runAgentPath(bench, secret);
      const { text: _, ...numbers } = r;
      results.agentPath = numbers;
      section("The agent path: llama.cpp through the Agent vs node-llama-cpp direct (paired, CI)", r.text);
    }
    if (args.suites.includes("mlx")) {
      log("agent with MLX (demo MLX model, CPU here)…");
      const r = await runMlx({ reps: args.reps });
      results.mlx = r.rows;
      checks.push(...r.checks);
      section("The agent with MLX (node-mlx in a child process, demo MLX model)", r.text);
    }
    if (args.suites.includes("structured")) {
      log("structured outputs: llama.cpp's grammar against unconstrained decoding…");
      const r = await runStructured({ reps: args.reps });
      results.structured = r.rows;
      checks.push(...r.checks);
      section("Structured outputs: the grammar's cost (llama.cpp, demo model)", r.text);
    }
    if (args.suites.includes("growth")) {
      log("growth…");
      const r = await runGrowth(bench);
      results.growth = { rows: r.rows, bytesPerStream: r.bytesPerStream };
      checks.push(...r.checks);
      section("Growth: concurrent open streams", r.text);
    }
    if (args.suites.includes("scrape")) {
      log("scrapes of a 50-agent, 20-model pool…");
      const r = await runScrape(bench, secret);
      results.scrape = r.rows;
      section("The operator's reads at fleet size (a gateway of its own)", r.text);
    }
    if (args.suites.includes("profile")) {
      log("profiling (inspector-enabled Workers)…");
      const r = await runProfile(bench, secret, resolve(REPO_ROOT, "bench-results", `profiles-${stamp}`));
      results.profile = r.runs.map((run) => ({
        ...run,
        worker: {
          ...run.worker,
          byFunction: run.worker.byFunction.slice(0, 40),
          byCallerFunction: run.worker.byCallerFunction.slice(0, 40),
        },
      }));
      section("Profile: where the time goes (V8 CPU profiles; the profiler inflates absolute times)", r.text);
    }
    if (args.suites.includes("variants")) {
      log("prototype optimizations on copies of the gateway…");
      const v = await runVariants(bench, secret, args.against, args.compare);
      results.variants = v.results;
      section(
        args.against === undefined
          ? "Prototyped optimizations (copies of gateway/ and schema/, measured against an unmodified copy)"
          : `Before/after: the gateway ${args.compare === undefined ? "in this checkout" : `at ${args.compare}`} against the one at ${args.against}, side by side`,
        v.text,
      );
    }
    const traffic = await rolloutTraffic(rollouts);
    if (traffic) {
      results.rollouts = traffic;
      section(
        "Rollouts the measured requests went through (as the gateway reports them)",
        formatTraffic(traffic),
      );
    }
    const load = monitor.stop();
    results.machineLoad = load;
    print(
      `machine load during the measurements: other processes used ${load.foreignPercent.toFixed(0)}% of all cores, ` +
        `this benchmark ${load.benchPercent.toFixed(0)}%, hypervisor steal ${load.stealPercent.toFixed(1)}%`,
    );
    print();
  } finally {
    log("stopping…");
    if (rollouts.active) log(`rollouts: ${await stopRollouts(rollouts)}`);
    await Promise.all([...agents, ...(llama ? [llama] : [])].map((a) => a.stop()));
    await Promise.all([relay.stop(), orchard.stop(), orchardOff?.stop()]);
  }

  if (args.suites.includes("micro")) {
    log("micro-benchmarks…");
    const micro = spawnTs("micro", resolve(REPO_ROOT, "bench/micro/run.ts"));
    const { cases } = await micro.waitFor<{ cases: MicroCase[] }>("result", 180_000);
    await micro.stop(1_000);
    results.micro = cases;
    section(
      "Micro-benchmarks (Node's V8, one process, nothing else running in it)",
      table(
        ["operation", "ns/op", "where"],
        cases.map((c) => [c.name, c.skipped ? `skipped (${c.skipped})` : num(c.nsPerOp, 0), c.where]),
      ),
    );
  }

  section("Targets", targetsTable(checks));
  const seconds = (performance.now() - started) / 1000;
  print(
    `run took ${seconds.toFixed(0)} s; load average now ${loadavg()
      .map((v) => v.toFixed(2))
      .join(" ")}`,
  );
  results.checks = checks;
  results.durationSeconds = seconds;
  results.loadAverageAtEnd = loadavg();
  const dir = resolve(REPO_ROOT, "bench-results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(resolve(dir, `bench-${stamp}.json`), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(resolve(dir, `bench-${stamp}.txt`), `${out.join("\n")}\n`);
  print(`wrote bench-results/bench-${stamp}.json and .txt`);
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    killAllChildren();
    process.exit(130);
  });
}
main().then(
  () => {
    killAllChildren();
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    killAllChildren();
    process.exit(1);
  },
);
