// The model registry's shared shapes: where a version's weights come from, its load parameters,
// its lifecycle status, and the routing table the Worker pushes to every AgentHub. Both sides of
// the wire import the source and artifact shapes (load frames carry them); the routing table is the
// Worker -> hub contract. HTTP bodies of /models live in registry-api.ts.
import { z } from "zod";
import type { RolloutRoute } from "./rollouts.ts";

/**
 * Model names in the registry: lower-case letters, digits and . _ -, starting with a letter or
 * digit. No '/': a name is one path segment of /models/{name}/{version}, so routes read one way.
 */
export const REGISTRY_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** Semver 2.0.0 (no leading zeros, optional pre-release and build). */
export const SEMVER_PATTERN =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/;
/** Alias names (`stable`, `latest`, `prod-eu`): not a version, so `name@alias` reads one way. */
export const ALIAS_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;

/**
 * The version an agent's own, unversioned local model is registered under: sorts below every real
 * version, and says what it is.
 */
export const AGENT_LOCAL_VERSION = "0.0.0-local";

/**
 * Free memory a load needs per byte of weights: the hub places no version on an agent with less,
 * and the agent refuses a load with less (INSUFFICIENT_MEMORY). One number, so both sides agree.
 */
export const LOAD_MEMORY_HEADROOM = 1.2;

export const Sha256 = z.string().regex(/^[0-9a-f]{64}$/, "sha256 is 64 lower-case hex digits");

/** Formats an artifact can have: one GGUF file, or an MLX model folder packed as a tar. */
export const ArtifactFormat = z.enum(["gguf", "mlx-tar"]);
export type ArtifactFormat = z.infer<typeof ArtifactFormat>;

/** Where agents get a version's weights. */
export const ModelSource = z.discriminatedUnion("kind", [
  /** Uploaded to the gateway (PUT /models/{id}/artifact), fetched by agents through it. */
  z.object({ kind: z.literal("artifact"), format: ArtifactFormat.default("gguf") }),
  /** A file or folder that already exists at this path on every agent that should serve it. */
  z.object({ kind: z.literal("path"), path: z.string().min(1).max(1024) }),
  /** A model tag a local Ollama server serves (`llama3.2:3b`). */
  z.object({ kind: z.literal("ollama"), tag: z.string().min(1).max(256) }),
  /** A Hugging Face repo the agent downloads on the Mac (not reachable from this lab's CI). */
  z.object({
    kind: z.literal("huggingface"),
    repo: z.string().regex(/^[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+$/, "repo is owner/name"),
    file: z.string().min(1).max(512).optional(),
    revision: z.string().min(1).max(128).optional(),
  }),
  /** Configured on an agent itself (its --model flags); registered by the hub when it sees it. */
  z.object({ kind: z.literal("agent-local") }),
]);
export type ModelSource = z.infer<typeof ModelSource>;

/** Load parameters: what an engine needs beyond the weights. */
export const ModelParameters = z
  .object({
    contextLength: z.number().int().positive().max(1_048_576).optional(),
    quantization: z.string().min(1).max(32).optional(),
    chatTemplate: z.string().min(1).max(16_384).optional(),
    /** Preferred engines, best first (an agent uses the first it has). */
    engines: z
      .array(z.enum(["llamacpp", "mlx", "ollama"]))
      .max(3)
      .optional(),
  })
  .strict();
export type ModelParameters = z.infer<typeof ModelParameters>;

/**
 * A version's lifecycle. `registered`: known, not serving by name. `active`: serves `name`.
 * `deprecated`: serves only requests that pin it, with a Deprecation header. `archived`: refused.
 */
export const VersionStatus = z.enum(["registered", "active", "deprecated", "archived"]);
export type VersionStatus = z.infer<typeof VersionStatus>;

/** What a load frame tells an agent about an artifact it must fetch through the gateway. */
export const ArtifactRef = z.object({
  /**
   * Path of GET /models/{id}/artifact on the gateway, resolved by the agent against the URL it
   * connected to; the agent authenticates with its own token and may use Range to resume.
   */
  path: z
    .string()
    .regex(/^\/models\/[^\s?#]+\/artifact$/, "an artifact path is /models/{id}/artifact")
    .max(512),
  sha256: Sha256,
  size: z.number().int().positive(),
  format: ArtifactFormat,
});
export type ArtifactRef = z.infer<typeof ArtifactRef>;

/** How many agents should hold a version loaded, and optionally in which pools only. */
export const Placement = z
  .object({
    replicas: z.number().int().min(0).max(1024).default(1),
    pools: z.array(z.string().min(1).max(64)).max(32).optional(),
  })
  .strict();
export type Placement = z.infer<typeof Placement>;

// ---- the routing table: Worker -> AgentHub ----

export interface RoutedVersion {
  version: string;
  status: VersionStatus;
  /**
   * The model id agents serve it under and generate frames name: `name:version`, or the bare
   * `name` for an agent-local model announced without a version.
   */
  servedAs: string;
  source: ModelSource;
  sha256: string | null;
  size: number | null;
  parameters: ModelParameters;
  /** Wanted loaded while active (or warm as the previous version); absent: no placement. */
  placement: Placement | null;
}

export interface RoutedModel {
  name: string;
  /** The version `name` resolves to, or null when none is active. */
  active: string | null;
  /** The version before the active one (rollback target); kept warm when memory allows. */
  previous: string | null;
  /** alias -> version. */
  aliases: Record<string, string>;
  /** version -> details; every version not archived, and archived ones so they can be refused. */
  versions: Record<string, RoutedVersion>;
  /**
   * Whether the previous version is kept loaded for an instant rollback (true unless a blue-green
   * deployment's rollback window has passed; the next activation sets it again).
   */
  warmPrevious: boolean;
  /** The deployment or A/B test splitting this model's traffic now, if any (schema/rollouts.ts). */
  rollout: RolloutRoute | null;
}

/**
 * Everything a hub needs to route by name without D1: pushed by the Worker after every registry
 * change, and reloaded from D1 when a hub wakes. `revision` only grows: a hub ignores a push older
 * than the table it holds.
 */
export interface RoutingTable {
  revision: number;
  /** Epoch ms when the Worker built it. */
  builtAt: number;
  models: Record<string, RoutedModel>;
  /**
   * Versions being prepared for activation (model id -> placement): loaded by the reconciler
   * ahead of the switch, not yet serving by name.
   */
  preparing: Record<string, Placement>;
}

/**
 * One served model id's placement in one hub (AgentHub RPC placementStatus(), keyed by servedAs):
 * agents that hold it loaded, are loading it, or failed to load it.
 */
export interface PlacementEntry {
  loaded: string[];
  loading: string[];
  failed: { agentId: string; code: string; message: string; at: number }[];
}

export const EMPTY_ROUTING_TABLE: RoutingTable = { revision: 0, builtAt: 0, models: {}, preparing: {} };
