// What the gateway does with a prompt the injection rules flag, per route and model: `off` (not
// scored), `flag` (served, counted and logged), `block` (400 PROMPT_INJECTION). Two layers say it:
// INJECTION_POLICY in wrangler.toml, and admins at run time (PUT /security/injection-policy, kept
// in D1). Pure: parsing the var and resolving a request's mode; policy-store.ts does the I/O.
import { z } from "zod";
import { isModelId, parseModelId } from "../../schema/model-id.ts";
import { ModelName } from "../../schema/protocol.ts";
import { INJECTION_MODES, PROMPT_ROUTES } from "../../schema/security-api.ts";

export const InjectionMode = z.enum(INJECTION_MODES);
export type InjectionMode = z.infer<typeof InjectionMode>;

/** The routes that carry prompts, as the metrics' `route` label names them. */
export const PromptRoute = z.enum(PROMPT_ROUTES);
export type PromptRoute = z.infer<typeof PromptRoute>;

/** One line of a policy: a mode for a route, a model, both, or (neither) every request. */
export const PolicyEntry = z.strictObject({
  mode: InjectionMode,
  route: PromptRoute.optional(),
  model: ModelName.optional(),
});
export type PolicyEntry = z.infer<typeof PolicyEntry>;

export const DEFAULT_INJECTION_MODE: InjectionMode = "flag";

export type PolicySource = "config" | "admin" | "default";

/** A policy line and the layer it came from (admin lines carry who set it, and when). */
export interface SourcedEntry extends PolicyEntry {
  source: Exclude<PolicySource, "default">;
  updatedAt?: string;
  updatedBy?: string;
}

export interface ResolvedMode {
  mode: InjectionMode;
  /** The line that decided, or null when nothing matched and the default applies. */
  from: SourcedEntry | null;
}

/**
 * INJECTION_POLICY: a bare mode ("block"), or a JSON array of {mode, route?, model?} lines, e.g.
 * [{"mode":"flag"},{"route":"chat","mode":"block"},{"model":"tiny","mode":"off"}]. Empty: flag
 * everywhere. Malformed: logged by the caller and the default kept; never a crash.
 */
export function parseInjectionPolicy(raw: string | undefined): {
  entries: PolicyEntry[];
  error: string | null;
} {
  const value = raw?.trim() ?? "";
  if (value === "") return { entries: [], error: null };
  const bare = InjectionMode.safeParse(value);
  if (bare.success) return { entries: [{ mode: bare.data }], error: null };
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    return { entries: [], error: 'not a mode ("off", "flag", "block") nor JSON' };
  }
  const parsed = z.array(PolicyEntry).max(256).safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { entries: [], error: `${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}` };
  }
  return { entries: parsed.data, error: null };
}

/**
 * The mode for one request: the most specific line that matches wins — route and exact model, then
 * the exact model, route and the model's name (a line for "llama" covers "llama:1.2.0" and
 * "llama@stable"), the name alone, the route alone, then a line for everything; at equal
 * specificity an admin's line wins over the config's. Nothing matches: DEFAULT_INJECTION_MODE.
 */
export function resolveInjectionMode(
  entries: readonly SourcedEntry[],
  route: PromptRoute,
  model: string | undefined,
): ResolvedMode {
  const name = model === undefined ? undefined : modelName(model);
  let best: SourcedEntry | null = null;
  let bestRank = -1;
  for (const entry of entries) {
    if (entry.route !== undefined && entry.route !== route) continue;
    let rank = entry.route === undefined ? 0 : 1;
    if (entry.model !== undefined) {
      if (entry.model === model) rank += 4;
      else if (entry.model === name) rank += 2;
      else continue;
    }
    rank = rank * 2 + (entry.source === "admin" ? 1 : 0);
    if (rank > bestRank) {
      best = entry;
      bestRank = rank;
    }
  }
  return best === null ? { mode: DEFAULT_INJECTION_MODE, from: null } : { mode: best.mode, from: best };
}

/** "llama:1.2.0" and "llama@stable" -> "llama"; a name without either is itself. */
function modelName(model: string): string {
  const at = model.lastIndexOf("@");
  const unaliased = at > 0 ? model.slice(0, at) : model;
  return isModelId(unaliased) ? parseModelId(unaliased).name : unaliased;
}

/** Two lines are for the same scope (an admin's PUT replaces the line of its scope). */
export function sameScope(
  a: Pick<PolicyEntry, "route" | "model">,
  b: Pick<PolicyEntry, "route" | "model">,
): boolean {
  return (a.route ?? null) === (b.route ?? null) && (a.model ?? null) === (b.model ?? null);
}
