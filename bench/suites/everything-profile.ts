// Each request-path feature's share of Orchard's work with everything on, from a V8 CPU profile:
// a separate, inspector-enabled Orchard Worker with the all-on configuration (stack.ts ALL_ON_VARS),
// its own agent, the registry routing and the two rollouts of the bench (canary on MODEL_1, A/B test
// on MODEL_4), driven with the everything suite's request mix at concurrency 32. The profile's
// self time (native runtime calls charged to the JavaScript that made them, e.g. the rate
// limiter's Worker -> hub call to its own code) is summed per feature by the modules that implement
// it. Locally one workerd thread runs the Worker and the hub, so both halves of a feature count.
// Shares are of workerd's busy time; "≈ µs/request" scales a share by the un-profiled all-on run's
// workerd CPU per request (the profiler itself inflates absolute times).
import {
  type Bench,
  MODEL_1,
  MODEL_4,
  measureHttp,
  modelNames,
  requestSpec,
  syntheticEngine,
} from "../lib/context.ts";
import type { HttpRequestSpec } from "../lib/http-client.ts";
import type { CpuProfile } from "../lib/inspector.ts";
import type { Attribution } from "../lib/profile-summary.ts";
import { routeThroughRegistry } from "../lib/registry-routing.ts";
import { benchRollouts, stopRollouts } from "../lib/rollouts.ts";
import { startAgent, startOrchard } from "../lib/stack.ts";
import { num, table } from "../lib/table.ts";
import { openWorkerProfiler, summarizeWorkerProfile } from "./profile.ts";

/** The modules that implement each feature (paths as the bundle's markers name them). */
export const FEATURE_MODULES: { feature: string; modules: RegExp }[] = [
  { feature: "rate limits (RATE_LIMITS)", modules: /^gateway\/ratelimit\// },
  {
    feature: "injection detection (flag mode)",
    modules:
      /^gateway\/security\/(injection[^/]*|screen-prompt|normalize|detections|policy-store|messages)\.ts$/,
  },
  {
    feature: "output sanitization (+ redaction)",
    modules: /^gateway\/security\/(output-sanitizer|control-chars|secrets|content-filters)\.ts$/,
  },
  {
    feature: "metrics recording",
    modules:
      /^gateway\/(metrics\/|monitoring\/|hub\/(hub-metrics|hub-telemetry|live-metrics|service-times|recent-requests)\.ts$)/,
  },
  {
    feature: "registry routing",
    modules: /^gateway\/(registry\/|hub\/(routing-table|registry-shell|model-resolution|known-models)\.ts$)/,
  },
  {
    feature: "canary + A/B test",
    modules: /^gateway\/(rollouts\/|experiments\/|deployments\/|hub\/(rollout-shell|rollout-stats)\.ts$)/,
  },
];

export interface FeatureShare {
  feature: string;
  /** % of workerd's busy time. */
  percent: number;
  /** The share times the un-profiled all-on workerd CPU per request, µs. */
  approxUsPerRequest: number;
  /** The modules it was summed from, largest first. */
  modules: string[];
}

export interface FeatureProfile {
  requests: number;
  shares: FeatureShare[];
  /** The same shares in a second profile at concurrency 1 (per-request work that batches under load shows here). */
  sharesAtOne: { feature: string; percent: number }[];
  requestsAtOne: number;
  /** Everything not attributed to a feature: the relay-like core, Hono, zod, jose, the runtime. */
  rest: Attribution[];
  text: string;
}

const short = (module: string) => module.replace(/^gateway\//, "");

function mix(bench: Bench): HttpRequestSpec {
  const one = requestSpec(bench, "orchard", MODEL_1, 8, false);
  const four = requestSpec(bench, "orchard", MODEL_4, 8, false);
  return { ...one, perRequestBodies: [one.body as string, four.body as string] };
}

export async function profileFeatures(
  bench: Bench,
  secret: string,
  allOnWorkerdCpuMs: number,
): Promise<FeatureProfile> {
  bench.log("  everything: profiling an inspector-enabled all-on Orchard…");
  const orchard = await startOrchard(secret, { inspector: true }, "orchard-profile");
  const engine = syntheticEngine(true, true);
  const agent = await startAgent("bench-profile-everything", secret, engine, {
    orchard,
    models: modelNames(engine),
  });
  const pb: Bench = { ...bench, orchard, agents: [agent] };
  const routing = await routeThroughRegistry(orchard.directOrigin, secret, modelNames(engine));
  const rollouts = await benchRollouts(orchard.directOrigin, secret, routing, true, "profile");
  const inspector = await openWorkerProfiler(orchard.inspectorUrl as string);
  try {
    const spec = mix(pb);
    // JIT first (warmup.ts): a profile of half-optimized code blames the wrong lines.
    for (let served = 0, t0 = performance.now(); served < 8_000 && performance.now() - t0 < 30_000; ) {
      const r = await measureHttp(pb, "orchard", spec, { concurrency: 12, warmupMs: 0, durationMs: 3000 }, [
        agent,
      ]);
      served += r.allCompleted;
    }
    const profileAt = async (concurrency: number) => {
      await inspector.call("Profiler.start");
      const r = await measureHttp(
        pb,
        "orchard",
        spec,
        { concurrency, warmupMs: 0, durationMs: 2500, expectTokens: 8 },
        [agent],
      );
      const { profile } = await inspector.call<{ profile: CpuProfile }>("Profiler.stop");
      const summary = await summarizeWorkerProfile(inspector, profile);
      const taken = new Set<string>();
      const shares: FeatureShare[] = FEATURE_MODULES.map(({ feature, modules }) => {
        const mine = summary.byCallerModule.filter((a) => modules.test(a.name) && !taken.has(a.name));
        for (const a of mine) taken.add(a.name);
        const percent = mine.reduce((sum, a) => sum + a.percent, 0);
        return {
          feature,
          percent,
          approxUsPerRequest: (percent / 100) * allOnWorkerdCpuMs * 1000,
          modules: mine.map((a) => a.name),
        };
      });
      const rest = summary.byCallerModule.filter((a) => !taken.has(a.name));
      return { r, shares, rest };
    };
    const { r, shares, rest } = await profileAt(32);
    const atOne = await profileAt(1);
    const restPercent = rest.reduce((sum, a) => sum + a.percent, 0);
    const restAtOne = atOne.rest.reduce((sum, a) => sum + a.percent, 0);
    const text = [
      table(
        [
          "feature (all on, conc 32; profile of workerd)",
          "% of workerd busy",
          "≈ µs/request",
          "% at conc 1",
          "largest modules",
        ],
        [
          ...shares.map((s, i) => [
            s.feature,
            num(s.percent, 1),
            num(s.approxUsPerRequest, 0),
            num(atOne.shares[i]?.percent ?? Number.NaN, 1),
            s.modules.slice(0, 2).map(short).join(", ") || "—",
          ]),
          [
            "everything else (relay-like core, Hono, zod, jose, runtime)",
            num(restPercent, 1),
            num((restPercent / 100) * allOnWorkerdCpuMs * 1000, 0),
            num(restAtOne, 1),
            rest
              .slice(0, 2)
              .map((a) => short(a.name))
              .join(", "),
          ],
        ],
      ),
      `profiled ${r.allCompleted} requests at concurrency 32 and ${atOne.r.allCompleted} at 1; ≈ µs/request = share × the all-on run's workerd CPU (${num(allOnWorkerdCpuMs, 3)} ms/request); the profiler inflates absolute times, shares are what to read`,
    ].join("\n");
    return {
      requests: r.allCompleted,
      shares,
      sharesAtOne: atOne.shares.map(({ feature, percent }) => ({ feature, percent })),
      requestsAtOne: atOne.r.allCompleted,
      rest: rest.slice(0, 20),
      text,
    };
  } finally {
    inspector.close();
    await stopRollouts(rollouts).catch(() => undefined);
    await agent.stop();
    await orchard.stop();
  }
}
