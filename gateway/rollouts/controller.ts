// RolloutController: one Durable Object per model name, the clock and the serializer of that
// model's deployments and A/B tests. D1 holds the truth (the rollouts row: spec, state, result, and
// its events), so a restart or a gateway deploy loses nothing: the alarm fires again, the next tick
// reads the row and carries on. Each tick observes what the hubs report (where each arm is loaded,
// the per-arm statistics of the current phase), lets the canary judge weigh them, hands that to the
// strategy's pure state machine (gateway/deployments/), and carries out the effects it returns:
// routing changes pushed to every hub, smoke tests, the registry switch, the rollback, the end.
import { DurableObject } from "cloudflare:workers";
import { eq } from "drizzle-orm";
import type { ErrorCode } from "../../schema/api.ts";
import { type ModelVersionRow, models, type RolloutRow } from "../../schema/db.ts";
import { CanaryCriteria } from "../../schema/experiments.ts";
import type { RolloutRoute } from "../../schema/rollouts.ts";
import type { AbTestStartRequest, DeploymentCommand, DeployRequest } from "../../schema/rollouts-api.ts";
import { RolloutLimits } from "../../schema/rollouts-api.ts";
import { readConfig } from "../config.ts";
import {
  advance,
  applyCommand,
  type DeploymentEvent,
  type DeploymentSpec,
  type DeploymentState,
  type Effect,
  isTerminal,
  type Observation,
  parseOptions,
  routeOf,
  startDeployment,
} from "../deployments/machine.ts";
import { GatewayError } from "../errors.ts";
import { abReport } from "../experiments/ab-report.ts";
import { judgeCanary } from "../experiments/canary-judge.ts";
import { describeError, log } from "../log.ts";
import { servedAsOf } from "../registry/hub-store.ts";
import { commitSwitch, rollback } from "../registry/lifecycle.ts";
import { placementOf, publishRoutingTable } from "../registry/publish.ts";
import {
  type Actor,
  eventInsert,
  findModel,
  findVersion,
  parseVersionedId,
  registryDb,
} from "../registry/versions.ts";
import { phaseStats, rolloutStats } from "./observe.ts";
import { runSmokeTest, type SmokeResult } from "./smoke.ts";
import {
  findRollout,
  inProgress,
  insertRollout,
  type RolloutEventInput,
  type RoutedState,
  runningRollout,
  saveRollout,
} from "./store.ts";

/** The controller's own decisions are recorded under this actor. */
const CONTROLLER: Actor = { sub: "controller", requestId: null };

/** What an RPC answers: the row, or a refusal the Worker turns into the HTTP error. */
export type ControllerAnswer =
  | { ok: true; row: RolloutRow }
  | { ok: false; code: ErrorCode; message: string; param?: string };

/** A deployment's spec as stored: the machine's, plus the ids each arm is served under. */
export interface StoredDeploymentSpec extends DeploymentSpec {
  servedAs: { a: string | null; b: string };
  /** The canary judge's criteria as asked (validated at start; defaults applied by the judge). */
  criteria?: Record<string, unknown>;
}

interface DeploymentRowState extends RoutedState {
  machine: DeploymentState;
  /** The last smoke test's result, for the next observation. */
  smoke?: SmokeResult;
}

export interface StoredAbSpec {
  id: string;
  model_a: string;
  model_b: string;
  arms: RolloutRoute["arms"];
  traffic_split: number;
  duration_hours: number;
  success_metrics: string[];
  alpha: number;
  min_requests: number;
  replicas: number;
}

const MODEL_KEY = "model";
const DEFAULT_AB_ALPHA = 0.05;
const DEFAULT_AB_MIN_REQUESTS = 100;

export class RolloutController extends DurableObject<Env> {
  /** The model this object drives; from its id, or from storage when an alarm woke it (no name then). */
  #model: string;
  readonly #tickMs: number;
  /** Every operation runs after the previous one: ticks and commands never interleave at an await. */
  #chain: Promise<unknown> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#model = ctx.id.name ?? "";
    this.#tickMs = readConfig(env).rolloutTickMs;
    // An object woken by its alarm has no name in its id (measured in workerd): keep it stored.
    void ctx.blockConcurrencyWhile(async () => {
      const stored = await ctx.storage.get<string>(MODEL_KEY);
      if (this.#model === "") this.#model = stored ?? "";
      else if (stored !== this.#model) await ctx.storage.put(MODEL_KEY, this.#model);
    });
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const next = this.#chain.then(work, work);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  // ---- RPC ----

  startDeployment(version: string, body: DeployRequest, actor: Actor): Promise<ControllerAnswer> {
    return this.#serial(() => answer(() => this.#startDeployment(version, body, actor)));
  }

  startAbTest(body: AbTestStartRequest, actor: Actor): Promise<ControllerAnswer> {
    return this.#serial(() => answer(() => this.#startAbTest(body, actor)));
  }

  command(id: string, command: DeploymentCommand, actor: Actor): Promise<ControllerAnswer> {
    return this.#serial(() => answer(() => this.#command(id, command, actor)));
  }

  stopAbTest(id: string, actor: Actor): Promise<ControllerAnswer> {
    return this.#serial(() => answer(() => this.#stopAbTest(id, actor)));
  }

  /** One tick now (tests; also what the alarm runs). */
  tick(): Promise<void> {
    return this.#serial(() => this.#tick());
  }

  override async alarm(): Promise<void> {
    // The next tick is scheduled before this one starts: a tick cut short (an eviction, a deploy,
    // a throw) still has a successor. A tick that ends the rollout clears it.
    await this.ctx.storage.setAlarm(Date.now() + this.#tickMs);
    try {
      await this.tick();
    } catch (err) {
      log("error", "rollout tick failed; retrying on the next", {
        model: this.#model,
        ...describeError(err),
      });
    }
  }

  // ---- deployments ----

  async #startDeployment(version: string, body: DeployRequest, actor: Actor): Promise<RolloutRow> {
    const db = registryDb(this.env.DB);
    const model = await findModel(db, this.#model);
    const candidate = await findVersion(db, this.#model, version);
    const candidateId = `${candidate.name}:${candidate.version}`;
    if (candidate.status === "archived") {
      throw new GatewayError("VERSION_ARCHIVED", `${candidateId} is archived and cannot serve`);
    }
    if (model.activeVersion === candidate.version) {
      throw new GatewayError("NOTHING_TO_DEPLOY", `${candidateId} is already the active version`);
    }
    if (model.activeVersion === null && (body.strategy === "canary" || body.strategy === "rolling")) {
      throw new GatewayError(
        "VERSION_NOT_ACTIVE",
        `a ${body.strategy} deployment replaces the active version, and "${this.#model}" has none; use immediate or blue_green`,
      );
    }
    const running = await runningRollout(db, this.#model);
    if (running !== undefined) throw inProgress(this.#model, running);
    let criteria: Record<string, unknown> | undefined;
    if (body.strategy === "canary" && body.criteria !== undefined) {
      const parsed = CanaryCriteria.safeParse(body.criteria);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new GatewayError(
          "INVALID_REQUEST",
          `criteria${issue?.path.length ? `.${issue.path.join(".")}` : ""}: ${issue?.message ?? "invalid"}`,
          { param: `criteria${issue?.path.length ? `.${issue.path.join(".")}` : ""}` },
        );
      }
      criteria = body.criteria;
    }
    // The judge's minimum defaults to the step's: a step is judged on the requests it holds for.
    if (
      body.strategy === "canary" &&
      body.min_requests_per_arm !== undefined &&
      criteria?.min_requests === undefined
    ) {
      criteria = { ...criteria, min_requests: Math.max(2, body.min_requests_per_arm) };
    }
    const baseline =
      model.activeVersion === null ? null : await findVersion(db, this.#model, model.activeVersion);
    const now = Date.now();
    const id = `dep-${now.toString(36)}-${crypto.randomUUID().slice(0, 8)}`;
    const spec: StoredDeploymentSpec = {
      id,
      model: this.#model,
      baseline: baseline?.version ?? null,
      candidate: candidate.version,
      strategy: body.strategy,
      options: parseOptions(body.strategy, camelOptions(body)),
      createdAt: now,
      servedAs: {
        a: baseline === null ? null : servedAsOf(baseline.name, baseline.version, baseline.source),
        b: servedAsOf(candidate.name, candidate.version, candidate.source),
      },
      ...(criteria === undefined ? {} : { criteria }),
    };
    // The first step runs on the alarm, right after the row exists, so its effects are carried
    // out like every later step's.
    const started = startDeployment(spec, now);
    const route = routeFor(spec, started.state);
    const state: DeploymentRowState = { route, machine: started.state };
    const row = await insertRollout(
      db,
      {
        id,
        kind: "deployment",
        model: this.#model,
        strategy: body.strategy,
        status: started.state.status,
        spec: spec as unknown as Record<string, unknown>,
        state,
        endsAt: null,
        now,
      },
      [
        {
          at: now,
          actor: actor.sub,
          kind: "created",
          requestId: actor.requestId,
          detail: {
            strategy: body.strategy,
            baseline: spec.baseline,
            candidate: spec.candidate,
            options: spec.options,
          },
        },
        ...started.events.map(eventInput),
      ],
      actor,
    );
    log("info", "deployment started", {
      model: this.#model,
      id,
      strategy: body.strategy,
      candidate: candidateId,
    });
    await publishRoutingTable(this.env);
    await this.ctx.storage.setAlarm(Date.now());
    return row;
  }

  async #command(id: string, command: DeploymentCommand, actor: Actor): Promise<RolloutRow> {
    const db = registryDb(this.env.DB);
    const row = await findRollout(db, id);
    if (row === undefined || row.kind !== "deployment" || row.model !== this.#model) {
      throw new GatewayError("DEPLOYMENT_NOT_FOUND", `no deployment "${id}"`);
    }
    if (!row.running) {
      throw new GatewayError("DEPLOYMENT_NOT_RUNNING", `deployment ${id} has ended (${row.status})`);
    }
    const spec = row.spec as unknown as StoredDeploymentSpec;
    const saved = row.state as unknown as DeploymentRowState;
    const now = Date.now();
    const outcome = applyCommand(spec, saved.machine, command, actor.sub, now);
    if (!outcome.ok) throw new GatewayError(outcome.code, outcome.message);
    await this.#carryOut(row, spec, saved, outcome, null, actor);
    await this.ctx.storage.setAlarm(Date.now());
    return (await findRollout(db, id)) ?? row;
  }

  async #tick(): Promise<void> {
    if (this.#model === "") {
      log("error", "rollout controller woke without knowing its model; no tick", {});
      await this.ctx.storage.deleteAlarm();
      return;
    }
    const db = registryDb(this.env.DB);
    const row = await runningRollout(db, this.#model);
    if (row === undefined) {
      await this.ctx.storage.deleteAlarm();
      return;
    }
    if (row.kind === "ab_test") {
      const endsAt = row.endsAt?.getTime() ?? Number.POSITIVE_INFINITY;
      if (Date.now() >= endsAt) {
        await this.#finishAbTest(row, "completed", CONTROLLER);
        await this.ctx.storage.deleteAlarm();
      } else {
        await this.ctx.storage.setAlarm(endsAt);
      }
      return;
    }
    const spec = row.spec as unknown as StoredDeploymentSpec;
    const saved = row.state as unknown as DeploymentRowState;
    const now = Date.now();
    const observation = await this.#observe(spec, saved, now);
    const outcome = advance(spec, saved.machine, observation);
    const ended = await this.#carryOut(row, spec, saved, outcome, observation, CONTROLLER);
    if (ended) await this.ctx.storage.deleteAlarm();
    else await this.ctx.storage.setAlarm(Date.now() + this.#tickMs);
  }

  /** What the machine sees: where each arm is loaded, this phase's figures, the judge, the smoke test. */
  async #observe(
    spec: StoredDeploymentSpec,
    saved: DeploymentRowState | null,
    now: number,
  ): Promise<Observation> {
    const ids = [spec.servedAs.b, ...(spec.servedAs.a === null ? [] : [spec.servedAs.a])];
    const placement = await placementOf(this.env, ids);
    const a = spec.servedAs.a === null ? undefined : placement.get(spec.servedAs.a);
    const found = placement.get(spec.servedAs.b) ?? { loaded: [], loading: [], failed: [] };
    // A hub remembers an agent's failed loads until a load succeeds; only this deployment's count.
    const b = { ...found, failed: found.failed.filter((f) => f.at >= spec.createdAt) };
    const observation: Observation = {
      now,
      a: { loaded: a?.loaded ?? [] },
      b: { loaded: b.loaded, loading: b.loading, failed: b.failed },
      requests: { a: 0, b: 0 },
    };
    if (saved !== null) {
      const merged = await rolloutStats(this.env, spec.id);
      const stats = phaseStats(merged, saved.machine.phase);
      // A canary step at 100 % sends no end user to the baseline, so nothing serves beside it:
      // it is judged against the baseline of the phase before (the previous step's, or the
      // preparing phase's for steps [100]); otherwise the last step could never pass.
      if (spec.strategy === "canary" && saved.machine.share >= 1 && saved.machine.phase > 0) {
        stats.a = phaseStats(merged, saved.machine.phase - 1).a;
      }
      observation.requests = { a: stats.a.requests, b: stats.b.requests };
      if (spec.strategy === "canary") {
        const criteria = CanaryCriteria.parse(spec.criteria ?? {});
        const judgement = judgeCanary(stats.a, stats.b, criteria);
        observation.judgement = { verdict: judgement.verdict, summary: judgement };
      }
      if (saved.smoke !== undefined) observation.smoke = saved.smoke;
    }
    if (spec.strategy === "rolling") {
      const ids = new Set([...(a?.loaded ?? []), ...b.loaded, ...Object.keys(saved?.machine.agents ?? {})]);
      const failed = new Set(b.failed.map((f) => f.agentId));
      observation.agents = [...ids].sort().map((id) => ({
        id,
        holdsA: a?.loaded.includes(id) ?? false,
        holdsB: b.loaded.includes(id),
        busyA: false,
        healthy: !failed.has(id),
      }));
    }
    return observation;
  }

  /**
   * Carries out a machine step: the registry changes its effects ask for, the new state and events
   * in one D1 batch, one routing-table push when anything hubs route by changed, and a smoke test
   * when asked (its result is saved for the next tick). True when the deployment ended.
   */
  async #carryOut(
    row: RolloutRow,
    spec: StoredDeploymentSpec,
    saved: DeploymentRowState,
    outcome: { state: DeploymentState; effects: Effect[]; events: DeploymentEvent[] },
    observation: Observation | null,
    actor: Actor,
  ): Promise<boolean> {
    const db = registryDb(this.env.DB);
    const { state, effects } = outcome;
    const events = outcome.events.map(eventInput);
    let registryChanged = false;
    let smokeWanted = false;
    let ended = false;
    for (const effect of effects) {
      try {
        switch (effect.kind) {
          case "publish":
            break;
          case "smoke_test":
            smokeWanted = true;
            break;
          case "activate_candidate":
            await this.#activateCandidate(spec, effect.replicas, observation, actor);
            registryChanged = true;
            break;
          case "restore_baseline":
            await rollback(this.env, spec.model, actor);
            registryChanged = true;
            break;
          case "cool_previous":
            await db.batch([
              db.update(models).set({ previousWarm: false }).where(eq(models.name, spec.model)),
              eventInsert(db, actor, {
                name: spec.model,
                version: spec.baseline,
                kind: "rollout_changed",
                detail: { rollout: spec.id, previous_warm: false },
              }),
            ]);
            registryChanged = true;
            break;
          case "end":
            ended = true;
            break;
        }
      } catch (err) {
        // The switch or the rollback failed: recorded, and the deployment pauses for a human
        // rather than guessing what state the registry is in.
        log("error", "deployment effect failed", { id: spec.id, effect: effect.kind, ...describeError(err) });
        events.push({
          at: Date.now(),
          actor: "controller",
          kind: "effect_failed",
          detail: {
            effect: effect.kind,
            error: err instanceof GatewayError ? `${err.code}: ${err.message}` : "internal error",
          },
        });
      }
    }
    const route = ended || isTerminal(state.status) ? null : routeFor(spec, state);
    const routeChanged = JSON.stringify(route) !== JSON.stringify(saved.route);
    const next: DeploymentRowState = { route, machine: state };
    if (!smokeWanted && saved.smoke !== undefined) next.smoke = saved.smoke;
    const now = Date.now();
    const result = ended ? await this.#finalStats(spec, state) : undefined;
    const saveOk = await saveRollout(
      db,
      row,
      { status: state.status, state: next, running: !ended, result, now },
      events,
      routeChanged,
      actor,
    );
    if (!saveOk) return true;
    if (routeChanged || registryChanged || ended) await publishRoutingTable(this.env);
    if (ended) log("info", "deployment ended", { id: spec.id, model: spec.model, status: state.status });
    if (smokeWanted && spec.servedAs.b !== null) {
      const options = spec.options as { smokePrompts?: string[]; smokeDeadlineMs?: number };
      const smoke = await runSmokeTest(
        this.env,
        spec.servedAs.b,
        options.smokePrompts ?? RolloutLimits.defaultSmokePrompts,
        options.smokeDeadlineMs ?? RolloutLimits.defaultSmokeDeadlineMs,
        spec.id,
      );
      await saveRollout(
        db,
        row,
        { status: state.status, state: { ...next, smoke }, running: true, now: Date.now() },
        [{ at: smoke.at, actor: "controller", kind: "smoke_test", detail: { ...smoke } }],
        false,
        CONTROLLER,
      );
    }
    return ended;
  }

  /** The registry switch to the candidate, with at least the capacity the baseline had. */
  async #activateCandidate(
    spec: StoredDeploymentSpec,
    replicas: number,
    observation: Observation | null,
    actor: Actor,
  ): Promise<void> {
    const db = registryDb(this.env.DB);
    const candidate: ModelVersionRow = await findVersion(db, spec.model, spec.candidate);
    const baseline = spec.baseline === null ? null : await findVersion(db, spec.model, spec.baseline);
    const placement = {
      replicas: Math.max(replicas, baseline?.placement?.replicas ?? 0, candidate.placement?.replicas ?? 0),
      ...(baseline?.placement?.pools === undefined ? {} : { pools: baseline.placement.pools }),
    };
    await commitSwitch(db, candidate, actor, {
      loadedOn: observation?.b.loaded ?? [],
      placement: candidate.source.kind === "agent-local" ? { replicas: 0 } : placement,
      deployment: spec.id,
    });
  }

  /** The figures a deployment ended with: its current phase, per arm, for GET /deployments/{id}. */
  async #finalStats(spec: StoredDeploymentSpec, state: DeploymentState): Promise<Record<string, unknown>> {
    try {
      const stats = phaseStats(await rolloutStats(this.env, spec.id), state.phase);
      return { phase: state.phase, a: summary(stats.a), b: summary(stats.b) };
    } catch (err) {
      log("warn", "final deployment stats unavailable", { id: spec.id, ...describeError(err) });
      return { phase: state.phase, unavailable: true };
    }
  }

  // ---- A/B tests ----

  async #startAbTest(body: AbTestStartRequest, actor: Actor): Promise<RolloutRow> {
    const db = registryDb(this.env.DB);
    const a = await versionOf(db, body.model_a, "model_a");
    const b = await versionOf(db, body.model_b, "model_b");
    if (a.name === b.name && a.version === b.version) {
      throw new GatewayError("INVALID_REQUEST", "model_a and model_b are the same version", {
        param: "model_b",
      });
    }
    const model = await findModel(db, a.name);
    if (model.activeVersion !== a.version) {
      throw new GatewayError(
        "VERSION_NOT_ACTIVE",
        `model_a must be the version serving "${a.name}" now (${model.activeVersion ?? "none is active"}); its requests are what the test splits`,
        { param: "model_a" },
      );
    }
    for (const [row, param] of [
      [a, "model_a"],
      [b, "model_b"],
    ] as const) {
      if (row.status === "archived") {
        throw new GatewayError("VERSION_ARCHIVED", `${row.name}:${row.version} is archived`, { param });
      }
    }
    const running = await runningRollout(db, a.name);
    if (running !== undefined) throw inProgress(a.name, running);
    const now = Date.now();
    const spec: StoredAbSpec = {
      id: body.test_id,
      model_a: `${a.name}:${a.version}`,
      model_b: `${b.name}:${b.version}`,
      arms: { a: { name: a.name, version: a.version }, b: { name: b.name, version: b.version } },
      traffic_split: body.traffic_split,
      duration_hours: body.duration_hours,
      success_metrics: body.success_metrics,
      alpha: body.alpha ?? DEFAULT_AB_ALPHA,
      min_requests: body.min_requests ?? DEFAULT_AB_MIN_REQUESTS,
      replicas: body.replicas ?? 1,
    };
    const route: RolloutRoute = {
      id: spec.id,
      kind: "ab_test",
      phase: 0,
      arms: spec.arms,
      share: spec.traffic_split,
      labels: { a: "a", b: "b" },
      placement: b.source.kind === "agent-local" ? null : { replicas: spec.replicas },
    };
    const endsAt = now + Math.round(body.duration_hours * 3_600_000);
    const row = await insertRollout(
      db,
      {
        id: spec.id,
        kind: "ab_test",
        model: a.name,
        strategy: "ab_test",
        status: "running",
        spec: spec as unknown as Record<string, unknown>,
        state: { route, startedAt: now },
        endsAt,
        now,
      },
      [{ at: now, actor: actor.sub, kind: "started", requestId: actor.requestId, detail: { ...spec } }],
      actor,
    );
    log("info", "A/B test started", { id: spec.id, model_a: spec.model_a, model_b: spec.model_b });
    await publishRoutingTable(this.env);
    await this.ctx.storage.setAlarm(endsAt);
    return row;
  }

  async #stopAbTest(id: string, actor: Actor): Promise<RolloutRow> {
    const db = registryDb(this.env.DB);
    const row = await findRollout(db, id);
    if (row === undefined || row.kind !== "ab_test" || row.model !== this.#model) {
      throw new GatewayError("AB_TEST_NOT_FOUND", `no A/B test "${id}"`);
    }
    if (!row.running)
      throw new GatewayError("AB_TEST_NOT_RUNNING", `A/B test ${id} has ended (${row.status})`);
    await this.#finishAbTest(row, "stopped", actor);
    return (await findRollout(db, id)) ?? row;
  }

  /** Ends a test: the final report (from every pool's figures) is stored, the split leaves the table. */
  async #finishAbTest(row: RolloutRow, status: "stopped" | "completed", actor: Actor): Promise<void> {
    const db = registryDb(this.env.DB);
    const spec = row.spec as unknown as StoredAbSpec;
    const stats = await rolloutStats(this.env, spec.id);
    const arms = phaseStats(stats, 0);
    const report = abReport(arms.a, arms.b, {
      split: spec.traffic_split,
      successMetrics: spec.success_metrics,
      alpha: spec.alpha,
      minRequests: spec.min_requests,
      final: true,
    });
    const result = {
      report,
      arms: { a: arms.a.toJSON(), b: arms.b.toJSON() },
      unavailable: stats.unavailable,
      missing_pools: stats.missingPools,
    } as unknown as Record<string, unknown>;
    const now = Date.now();
    await saveRollout(
      db,
      row,
      { status, state: { ...(row.state as RoutedState), route: null }, running: false, result, now },
      [
        {
          at: now,
          actor: actor.sub,
          kind: status,
          requestId: actor.requestId,
          detail: { verdict: report.verdict },
        },
      ],
      true,
      actor,
    );
    await publishRoutingTable(this.env);
    log("info", "A/B test ended", { id: spec.id, status, verdict: report.verdict });
  }
}

/** The routing table's entry for a deployment in `state` (null when it routes nothing). */
function routeFor(spec: StoredDeploymentSpec, state: DeploymentState): RolloutRoute | null {
  const route = routeOf(spec, state);
  if (route === null) return null;
  return {
    id: spec.id,
    kind: spec.strategy,
    phase: route.phase,
    arms: {
      a: { name: spec.model, version: spec.baseline ?? spec.candidate },
      b: { name: spec.model, version: spec.candidate },
    },
    share: spec.baseline === null ? 0 : route.share,
    labels: spec.strategy === "canary" ? { a: "baseline", b: "canary" } : { a: "current", b: "new" },
    placement: route.placementReplicas === null ? null : { replicas: route.placementReplicas },
    ...(route.agents === undefined ? {} : { agents: route.agents }),
  };
}

function eventInput(e: DeploymentEvent): RolloutEventInput {
  return { at: e.at, actor: e.actor, kind: e.kind, detail: e.detail };
}

/** The HTTP body's snake_case options as the machine's camelCase ones (criteria stays for the judge). */
function camelOptions(body: DeployRequest): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === "strategy" || key === "criteria" || value === undefined) continue;
    out[key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase())] = value;
  }
  return out;
}

async function versionOf(db: ReturnType<typeof registryDb>, modelId: string, param: string) {
  try {
    const { name, version } = parseVersionedId(modelId);
    return await findVersion(db, name, version);
  } catch (err) {
    if (err instanceof GatewayError) throw new GatewayError(err.code, `${param}: ${err.message}`, { param });
    throw err;
  }
}

function summary(stats: { requests: number; errors: number; feedbackCount: number }) {
  return { requests: stats.requests, errors: stats.errors, feedback: stats.feedbackCount };
}

/** Runs `work`; a GatewayError becomes a refusal the Worker rethrows (errors lose their code over RPC). */
async function answer(work: () => Promise<RolloutRow>): Promise<ControllerAnswer> {
  try {
    return { ok: true, row: await work() };
  } catch (err) {
    if (err instanceof GatewayError) {
      return { ok: false, code: err.code, message: err.message, ...(err.param ? { param: err.param } : {}) };
    }
    throw err;
  }
}
