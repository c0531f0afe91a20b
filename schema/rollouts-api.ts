// HTTP bodies of deployments (POST /models/{model_id}/deploy, /deployments), A/B tests
// (/ab-tests) and feedback (POST /feedback). Durations are milliseconds (`*_ms`) like the rest of
// the API, except the specification's own `duration_hours`.
import { z } from "zod";
import { SuccessMetric } from "./experiments.ts";
import { REGISTRY_NAME_PATTERN } from "./registry.ts";

const ms = (max: number) => z.number().int().min(0).max(max);
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Prompts a blue-green smoke test sends to the new version; each must succeed within the deadline. */
const SmokePrompts = z.array(z.string().min(1).max(4096)).min(1).max(16);

const Replicas = z.number().int().min(1).max(1024);

export const ImmediateOptions = z
  .object({
    strategy: z.literal("immediate"),
    /** Agents that must hold the new version before the switch (default: as many as hold the current one, at least 1). */
    replicas: Replicas.optional(),
    timeout_ms: ms(DAY).min(1000).optional(),
  })
  .strict();

export const BlueGreenOptions = z
  .object({
    strategy: z.literal("blue_green"),
    smoke_prompts: SmokePrompts.optional(),
    smoke_deadline_ms: ms(10 * 60_000)
      .min(100)
      .optional(),
    /** How long the old version stays loaded after the switch, for an instant abort. */
    rollback_window_ms: ms(7 * DAY).optional(),
    timeout_ms: ms(DAY).min(1000).optional(),
  })
  .strict();

export const CanaryOptions = z
  .object({
    strategy: z.literal("canary"),
    /** Traffic share of each step in percent, increasing, the last 100 (default 5, 25, 50, 100). */
    steps: z
      .array(z.number().gt(0).max(100))
      .min(1)
      .max(20)
      .refine((s) => s.every((v, i) => i === 0 || v > (s[i - 1] as number)), "steps must increase")
      .refine((s) => s.at(-1) === 100, "the last step must be 100")
      .optional(),
    min_step_ms: ms(7 * DAY).optional(),
    min_requests_per_arm: z.number().int().min(1).max(10_000_000).optional(),
    /** A step still short of data by then pauses for a human (never a failure). */
    step_deadline_ms: ms(30 * DAY)
      .min(1000)
      .optional(),
    rollback_window_ms: ms(7 * DAY).optional(),
    /** Agents holding the canary (default 1). */
    replicas: Replicas.optional(),
    /**
     * The judge's thresholds and which metrics are critical (schema/experiments.ts). Its
     * `min_requests` defaults to min_requests_per_arm, so a step is judged on what it holds for.
     */
    criteria: z.record(z.string(), z.unknown()).optional(),
    timeout_ms: ms(DAY).min(1000).optional(),
  })
  .strict();

export const RollingOptions = z
  .object({
    strategy: z.literal("rolling"),
    max_unavailable: z.number().int().min(0).max(1024).optional(),
    max_surge: z.number().int().min(0).max(1024).optional(),
    /** How long a changed agent must hold the new version loaded and healthy before the next one. */
    health_check_ms: ms(HOUR).optional(),
    /** Longest one agent may take to drain and load. */
    agent_timeout_ms: ms(DAY).min(1000).optional(),
  })
  .strict()
  .refine((o) => (o.max_unavailable ?? 1) + (o.max_surge ?? 0) > 0, {
    message: "max_unavailable and max_surge cannot both be 0",
    path: ["max_unavailable"],
  });

/** The specification spells it `blue-green`; both spellings are accepted. */
export const DeployRequest = z.preprocess(
  (body) =>
    typeof body === "object" && body !== null && (body as { strategy?: unknown }).strategy === "blue-green"
      ? { ...body, strategy: "blue_green" }
      : body,
  z.discriminatedUnion("strategy", [ImmediateOptions, BlueGreenOptions, CanaryOptions, RollingOptions]),
);
export type DeployRequest = z.infer<typeof DeployRequest>;

export const DeploymentCommand = z.enum(["promote", "pause", "resume", "abort"]);
export type DeploymentCommand = z.infer<typeof DeploymentCommand>;

export const DeploymentListQuery = z
  .object({
    model: z.string().regex(REGISTRY_NAME_PATTERN, "model is a registry name").optional(),
    status: z.string().min(1).max(32).optional(),
    limit: z.coerce.number().int().min(1).max(200).default(50),
  })
  .strict();

/** A/B test ids: one path segment. */
export const TEST_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const AbTestStartRequest = z
  .object({
    test_id: z.string().regex(TEST_ID_PATTERN, "test_id: letters, digits, . _ -, at most 64"),
    /** name:version; its name's requests are split. It must be the version serving that name now. */
    model_a: z.string().min(3).max(200),
    /** name:version served to the share `traffic_split` of end users. */
    model_b: z.string().min(3).max(200),
    /** Share of end users assigned to model_b, strictly between 0 and 1. */
    traffic_split: z.number().gt(0).lt(1),
    duration_hours: z
      .number()
      .gt(0)
      .max(24 * 90),
    success_metrics: z.array(SuccessMetric).min(1).max(8),
    alpha: z.number().gt(0).max(0.2).optional(),
    min_requests: z.number().int().min(1).max(10_000_000).optional(),
    /** Agents holding model_b while the test runs (default 1). */
    replicas: Replicas.optional(),
  })
  .strict();
export type AbTestStartRequest = z.infer<typeof AbTestStartRequest>;

export const AbTestListQuery = z
  .object({
    status: z.enum(["running", "all", "stopped", "completed"]).default("running"),
    limit: z.coerce.number().int().min(1).max(200).default(50),
  })
  .strict();

/** Feedback on one answer: a score in [0, 1], or thumbs up (1) / down (0). */
export const FeedbackRequest = z
  .object({
    request_id: z.string().min(1).max(100),
    score: z.number().min(0).max(1).optional(),
    thumbs: z.enum(["up", "down"]).optional(),
  })
  .strict()
  .refine((f) => (f.score === undefined) !== (f.thumbs === undefined), {
    message: "exactly one of score or thumbs",
    path: ["score"],
  });
export type FeedbackRequest = z.infer<typeof FeedbackRequest>;

export const RolloutLimits = {
  /** Smoke prompt defaults: one short prompt, 30 s. */
  defaultSmokePrompts: ["Say hello."],
  defaultSmokeDeadlineMs: 30_000,
} as const;
