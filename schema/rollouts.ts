// Rollouts: deployments (immediate, blue-green, canary, rolling) and A/B tests, as the Worker's
// controller and the AgentHubs share them. A rollout that splits traffic rides in the routing table
// (RoutedModel.rollout): hubs assign each request's end user to arm a or b by a deterministic hash,
// serve that arm's version, and accumulate per-arm statistics (ArmStatsJson) that the controller
// reads over RPC and judges. HTTP bodies of /deployments and /ab-tests live in rollouts-api.ts.
import type { Placement } from "./registry.ts";

export const ROLLOUT_KINDS = ["immediate", "blue_green", "canary", "rolling", "ab_test"] as const;
export type RolloutKind = (typeof ROLLOUT_KINDS)[number];

/** Arm a is the baseline (the active version, or an A/B test's model_a), arm b the candidate. */
export type Arm = "a" | "b";

/** A model version one arm serves. */
export interface ArmTarget {
  name: string;
  version: string;
}

/**
 * What a hub needs to split one model's traffic: requests for the model's bare name (not pinned
 * ids, not aliases) are assigned to arm b when `assignmentPoint(id, subject) < share`, else arm a.
 * Raising `share` only moves users from a to b, so a user never flips back within a rollout.
 */
export interface RolloutRoute {
  /** Deployment id or A/B test id; also the assignment hash's salt. */
  id: string;
  kind: RolloutKind;
  /**
   * Statistics are kept per phase (a canary step); a new phase starts empty so each step is judged
   * on traffic it saw. A/B tests have one phase, 0.
   */
  phase: number;
  arms: { a: ArmTarget; b: ArmTarget };
  /** Share of end users assigned to arm b, 0..1. */
  share: number;
  /** What X-Orchard-Variant says for each arm: `a`/`b` for A/B tests, `baseline`/`canary` for canaries. */
  labels: { a: string; b: string };
  /** How many agents hold arm b loaded while the rollout runs (null: the version's own placement). */
  placement: Placement | null;
  /**
   * Rolling deployments: which arm(s) each agent serves for this model. An agent listed with "b"
   * gets no new requests for arm a (what it has in flight finishes) and unloads it when idle; "both"
   * is a surge agent holding the two. Agents not listed serve arm a.
   */
  agents?: Record<string, Arm | "both">;
}

/** The request's end user, for sticky assignment: the OpenAI `user` field, X-Orchard-User, else the JWT `sub`. */
export const USER_HEADER = "X-Orchard-User";
/** Which arm answered (the rollout's label for it). */
export const VARIANT_HEADER = "X-Orchard-Variant";
/** Which rollout assigned the arm. */
export const EXPERIMENT_HEADER = "X-Orchard-Experiment";

/** 32-bit FNV-1a of UTF-16 code units. */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** A final avalanche (murmur3's fmix32), so nearby inputs spread over the whole range. */
function fmix32(h: number): number {
  let x = h;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** Where an end user falls in [0, 1) for rollout `id`: the same user, the same point, every time. */
export function assignmentPoint(id: string, subject: string): number {
  return fmix32(fnv1a32(`${id}\u0000${subject}`)) / 2 ** 32;
}

/** The arm an end user gets in a rollout with this share of b. */
export function assignArm(id: string, subject: string, share: number): Arm {
  return assignmentPoint(id, subject) < share ? "b" : "a";
}

/**
 * An independent 32-bit hash of the subject (a different salt), used to sample subjects for the
 * sample-ratio check without correlating with the assignment.
 */
export function subjectSampleHash(id: string, subject: string): number {
  return fmix32(fnv1a32(`srm\u0000${id}\u0000${subject}`));
}
