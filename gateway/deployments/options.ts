// Each strategy's options (camelCase, as the state machines read them) with their documented
// defaults, applied once when a deployment is created; the stored spec holds them all. The HTTP
// body (schema/rollouts-api.ts, snake_case) is validated first; this adds the defaults and the
// checks that span options (a step deadline not shorter than the minimum step).
import { z } from "zod";
import { RolloutLimits } from "../../schema/rollouts-api.ts";
import { GatewayError } from "../errors.ts";

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

const duration = (min: number, max: number) => z.number().int().min(min).max(max);
/** Agents that should hold the candidate; null: as many as hold the baseline (at least 1). */
const replicas = z.number().int().min(1).max(1024).nullable().default(null);
/** How long the candidate may take to load before the deployment fails (nothing switched). */
const timeoutMs = duration(1000, DAY).default(10 * MINUTE);
const rollbackWindowMs = duration(0, 7 * DAY).default(10 * MINUTE);

export const ImmediateOptions = z.object({ replicas, timeoutMs }).strict();
export type ImmediateOptions = z.infer<typeof ImmediateOptions>;

export const BlueGreenOptions = z
  .object({
    timeoutMs,
    /** Each must answer within smokeDeadlineMs, or nothing switches. */
    smokePrompts: z
      .array(z.string().min(1).max(4096))
      .min(1)
      .max(16)
      .default([...RolloutLimits.defaultSmokePrompts]),
    smokeDeadlineMs: duration(100, 10 * MINUTE).default(RolloutLimits.defaultSmokeDeadlineMs),
    /** How long the baseline stays warm after the switch, so `abort` is instant. */
    rollbackWindowMs,
  })
  .strict();
export type BlueGreenOptions = z.infer<typeof BlueGreenOptions>;

export const CanaryOptions = z
  .object({
    /** Percent of end users on the candidate at each step, ascending; the last one passing promotes. */
    steps: z
      .array(z.number().gt(0).max(100))
      .min(1)
      .max(20)
      .refine((s) => s.every((v, i) => i === 0 || v > (s[i - 1] as number)), "steps must increase")
      .default([5, 25, 50, 100]),
    minStepMs: duration(0, 7 * DAY).default(5 * MINUTE),
    minRequestsPerArm: z.number().int().min(1).max(10_000_000).default(100),
    /** A step still short of data by then pauses for a human (never a failure). */
    stepDeadlineMs: duration(1000, 30 * DAY).default(30 * MINUTE),
    /** After a failing judgement the rollout stays (share 0) this long, so in-flight work finishes. */
    rollbackWindowMs,
    /** Agents holding the candidate at the small steps (more as the share grows, up to the baseline's). */
    replicas: z.number().int().min(1).max(1024).default(1),
    timeoutMs,
  })
  .strict()
  .refine((o) => o.stepDeadlineMs >= o.minStepMs, {
    path: ["stepDeadlineMs"],
    message: "must be at least minStepMs",
  });
export type CanaryOptions = z.infer<typeof CanaryOptions>;

export const RollingOptions = z
  .object({
    /** Agents drained of the baseline at once (each loads the candidate after). */
    maxUnavailable: z.number().int().min(0).max(1024).default(1),
    /** Agents loading the candidate beside the baseline at once. */
    maxSurge: z.number().int().min(0).max(1024).default(0),
    /** A changed agent must hold the candidate loaded and healthy this long before the next batch. */
    healthCheckMs: duration(0, 60 * MINUTE).default(10_000),
    /** Longest one agent may take to load the candidate. */
    agentTimeoutMs: duration(1000, DAY).default(10 * MINUTE),
  })
  .strict()
  .refine((o) => o.maxUnavailable + o.maxSurge > 0, {
    path: ["maxUnavailable"],
    message: "maxUnavailable and maxSurge cannot both be 0",
  });
export type RollingOptions = z.infer<typeof RollingOptions>;

export interface OptionsOf {
  immediate: ImmediateOptions;
  blue_green: BlueGreenOptions;
  canary: CanaryOptions;
  rolling: RollingOptions;
}
export type StrategyOptions = OptionsOf[keyof OptionsOf];

const SCHEMAS: { [S in keyof OptionsOf]: z.ZodType<OptionsOf[S]> } = {
  immediate: ImmediateOptions,
  blue_green: BlueGreenOptions,
  canary: CanaryOptions,
  rolling: RollingOptions,
};

export type CheckedOptions<S extends keyof OptionsOf> =
  | { ok: true; options: OptionsOf[S] }
  /** `param` is the option as the HTTP body spells it (`step_deadline_ms`, `steps.2`). */
  | { ok: false; param: string; message: string };

const snake = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Validates a strategy's camelCase options (a partial object; undefined: all defaults) and applies defaults. */
export function checkOptions<S extends keyof OptionsOf>(strategy: S, raw: unknown): CheckedOptions<S> {
  const parsed = SCHEMAS[strategy].safeParse(raw ?? {});
  if (parsed.success) return { ok: true, options: parsed.data };
  const issue = parsed.error.issues[0];
  const path = issue?.code === "unrecognized_keys" ? [issue.keys[0] ?? ""] : (issue?.path ?? []);
  const param = path.length > 0 ? path.map((p) => snake(String(p))).join(".") : "options";
  return { ok: false, param, message: `${param}: ${issue?.message ?? "invalid"}` };
}

/** As checkOptions, for the controller: invalid options are a 400 INVALID_REQUEST naming the option. */
export function parseOptions<S extends keyof OptionsOf>(strategy: S, raw: unknown): OptionsOf[S] {
  const checked = checkOptions(strategy, raw);
  if (!checked.ok) throw new GatewayError("INVALID_REQUEST", checked.message, { param: checked.param });
  return checked.options;
}

/** Every strategy's options with nothing set: the documented defaults. */
export const DEFAULT_OPTIONS: OptionsOf = {
  immediate: ImmediateOptions.parse({}),
  blue_green: BlueGreenOptions.parse({}),
  canary: CanaryOptions.parse({}),
  rolling: RollingOptions.parse({}),
};
