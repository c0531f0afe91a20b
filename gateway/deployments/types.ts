// The shapes a deployment's state machine reads and returns: the spec it was started with, its
// state (stored in D1 as JSON, so plain data only), what the controller observed, and the effects
// and events each decision yields. No I/O: the controller (a Durable Object alarm) carries them out.
import type { OptionsOf, StrategyOptions } from "./options.ts";

export const STRATEGIES = ["immediate", "blue_green", "canary", "rolling"] as const;
export type Strategy = (typeof STRATEGIES)[number];

export const DEPLOYMENT_STATUSES = [
  /** Waiting for the candidate to load (immediate, blue-green, canary) or for the baseline's agents (rolling). */
  "preparing",
  /** Blue-green: the smoke prompts run against the candidate. */
  "smoke_testing",
  /** Canary steps or rolling batches under way. */
  "progressing",
  /** Held by a human or by a canary step deadline; `pausedReason` says which. */
  "paused",
  /** Blue-green: the candidate is active, the baseline kept warm for the rollback window. */
  "switched",
  /** Canary failed: share 0, the rollout stays in the table for the rollback window. */
  "rolling_back",
  "succeeded",
  /** Rolled back on its own (a failing judgement, a failed rolling batch). */
  "rolled_back",
  /** Stopped by a human (abort), restoring the baseline if it had switched. */
  "aborted",
  /** Never switched: the candidate did not load, or its smoke test failed. */
  "failed",
] as const;
export type DeploymentStatus = (typeof DEPLOYMENT_STATUSES)[number];

export const TERMINAL_STATUSES: readonly DeploymentStatus[] = [
  "succeeded",
  "rolled_back",
  "aborted",
  "failed",
];

export function isTerminal(status: DeploymentStatus): boolean {
  return TERMINAL_STATUSES.includes(status);
}

export const DEPLOYMENT_COMMANDS = ["promote", "pause", "resume", "abort"] as const;
export type DeploymentCommand = (typeof DEPLOYMENT_COMMANDS)[number];

export interface DeploymentSpec {
  id: string;
  model: string;
  /** The version active when the deployment started (arm a), or null when none was. */
  baseline: string | null;
  /** The version being deployed (arm b). */
  candidate: string;
  strategy: Strategy;
  /** The strategy's options, every default applied (options.ts). */
  options: StrategyOptions;
  createdAt: number;
}

/** A spec whose options are known to be strategy S's (the dispatcher narrows by `strategy`). */
export type SpecOf<S extends Strategy> = Omit<DeploymentSpec, "strategy" | "options"> & {
  strategy: S;
  options: OptionsOf[S];
};

export type Verdict = "pass" | "fail" | "not_enough_data";

/** One judgement as the machine saw it (canary), with the numbers it was made on. */
export interface JudgementRecord {
  at: number;
  verdict: Verdict;
  requests: { a: number; b: number };
  elapsedMs: number;
  summary: unknown;
}

/** A canary step or a rolling batch. */
export interface StepRecord {
  index: number;
  /** Share of end users on arm b when the step started. */
  share: number;
  phase: number;
  startedAt: number;
  endedAt: number | null;
  /** How the step ended; null while it runs (or when a command cut it short: see `endedBy`). */
  verdict: Verdict | null;
  endedBy?: "controller" | "promote" | "abort";
  /** Canary: requests per arm in this phase, as last observed. */
  requests?: { a: number; b: number };
  /** Canary: the first judgement and every change of verdict (at most MAX_JUDGEMENTS_PER_STEP). */
  judgements?: JudgementRecord[];
  /** Canary: the latest judgement, whatever its verdict. */
  lastJudgement?: JudgementRecord;
  /** Rolling: the agents changed in this batch and how. */
  agents?: { id: string; mode: RollingMode }[];
}

/** Rolling: `surge` loads b beside a ("both", then "b"); `unavailable` drains a and loads b ("b"). */
export type RollingMode = "surge" | "unavailable";
export type RollingStage = "pending" | "changing" | "checking" | "converted" | "skipped";

export interface RollingAgentState {
  stage: RollingStage;
  mode?: RollingMode;
  /** When the agent entered its stage (a load's timeout and a health check count from here). */
  since: number;
}

export type AgentAssignment = "a" | "b" | "both";

export interface DeploymentState {
  status: DeploymentStatus;
  /** Statistics phase the hubs count under (a canary step is one phase; 0 elsewhere). */
  phase: number;
  /** Share of end users assigned to arm b, 0..1. */
  share: number;
  /** Canary: index into options.steps (-1 before the first step). Rolling: batches started. */
  stepIndex: number;
  /** When the current stage began: preparing, a step, a smoke test, the rollback window. */
  stepStartedAt: number;
  startedAt: number;
  endedAt: number | null;
  /** Agents that should hold b while it prepares (resolved from the first observation). */
  replicas: number | null;
  /** Agents that held the baseline when the deployment first observed the fleet. */
  baselineAgents: number | null;
  steps: StepRecord[];
  pausedFrom?: DeploymentStatus;
  pausedReason?: string;
  /** Why a terminal status was reached. */
  reason?: string;
  /** Blue-green: smoke test attempts so far and when the last began. */
  smoke?: { attempts: number; startedAt: number };
  /** Blue-green: when the candidate became active. */
  switchedAt?: number;
  /** Rolling: the assignment published for each changed agent (unlisted agents serve arm a). */
  agents?: Record<string, AgentAssignment>;
  /** Rolling: each baseline agent's progress, in the order they are converted. */
  rolling?: { order: string[]; agents: Record<string, RollingAgentState> };
}

/** What the controller saw. The machines tolerate any field missing or malformed (not ready yet). */
export interface Observation {
  now: number;
  /** When given, the phase `requests` and `judgement` were counted in; other phases' are ignored. */
  phase?: number;
  /** Agent ids holding the baseline loaded (all pools). */
  a: { loaded: string[] };
  b: { loaded: string[]; loading: string[]; failed: { agentId: string; code: string; message: string }[] };
  /** Requests counted this phase, per arm. */
  requests: { a: number; b: number };
  /** Canary: the judge's verdict on this phase's statistics. */
  judgement?: { verdict: Verdict; summary: unknown };
  /** The result of the last smoke_test effect. */
  smoke?: { ok: boolean; results: { prompt: string; ok: boolean; ms: number; error?: string }[] };
  /** Rolling: the agents serving the model. */
  agents?: { id: string; holdsA: boolean; holdsB: boolean; busyA: boolean; healthy: boolean }[];
}

/** What the controller carries out, in order. */
export type Effect =
  /** Routing changed (share, phase, agents, placement): rebuild the routing table and push it. */
  | { kind: "publish" }
  /** Run the smoke prompts against arm b (pinned name:version); the result comes in the next observation. */
  | { kind: "smoke_test" }
  /** Registry switch: b becomes active with this placement; a becomes previous, kept warm. */
  | { kind: "activate_candidate"; replicas: number }
  /** After a switch: a is active again (instant rollback). */
  | { kind: "restore_baseline" }
  /** Stop keeping the previous version warm. */
  | { kind: "cool_previous" }
  /** Terminal: the rollout leaves the routing table (the controller republishes it without). */
  | { kind: "end" };

export const DEPLOYMENT_EVENT_KINDS = [
  "started",
  "candidate_ready",
  "load_failed",
  "load_timeout",
  "smoke_test_started",
  "smoke_test_retried",
  "smoke_test_passed",
  "smoke_test_failed",
  "candidate_activated",
  "baseline_restored",
  "previous_cooled",
  "step_started",
  "step_passed",
  "canary_failed",
  "batch_started",
  "agent_ready",
  "agent_converted",
  "agent_skipped",
  "agent_failed",
  "share_changed",
  "rolled_back",
  "paused",
  "resumed",
  "promoted",
  "aborted",
  "ended",
] as const;
export type DeploymentEventKind = (typeof DEPLOYMENT_EVENT_KINDS)[number];

export interface DeploymentEvent {
  at: number;
  kind: DeploymentEventKind;
  /** "controller", or the subject of the user who sent the command. */
  actor: string;
  /** The numbers behind the decision. */
  detail: Record<string, unknown>;
}

export interface Transition {
  state: DeploymentState;
  effects: Effect[];
  events: DeploymentEvent[];
}

export type CommandErrorCode = "DEPLOYMENT_NOT_RUNNING" | "DEPLOYMENT_NOT_PAUSED" | "COMMAND_NOT_ALLOWED";
export type CommandResult =
  | ({ ok: true } & Transition)
  | { ok: false; code: CommandErrorCode; message: string };

/** What the routing table's RolloutRoute carries for this deployment now. */
export interface RouteFields {
  share: number;
  phase: number;
  /** Agents that should hold arm b (null: the version's own placement). */
  placementReplicas: number | null;
  agents?: Record<string, AgentAssignment>;
}
