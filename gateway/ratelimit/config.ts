// RATE_LIMITS (wrangler.toml var): the per-role defaults of every subject's limits, and optional
// limits per model, as JSON; "off" turns the limiter off. A malformed value is logged and the
// built-in defaults apply: limits are a protection, so a typo must not remove them.
import { z } from "zod";
import { MAX_RATE_LIMIT, type PartialRateLimits } from "../../schema/hub.ts";
import { isModelId, parseModelId } from "../../schema/model-id.ts";
import { ModelName } from "../../schema/protocol.ts";
import { log } from "../log.ts";
import type { Limits } from "./book.ts";

/** The roles that may call inference (auth: an admin may do all a user may). */
export type LimitedRole = "user" | "admin";

export interface RoleRateLimits {
  limits: Limits;
  /** Limits of their own per model name (RATE_LIMITS `models`), on top of the subject's. */
  models: ReadonlyMap<string, PartialRateLimits>;
}

export interface RateLimitConfig {
  enabled: boolean;
  roles: Readonly<Record<LimitedRole, RoleRateLimits>>;
}

/** The built-in defaults: what an unset, empty or malformed RATE_LIMITS gives, field by field. */
export const DEFAULT_RATE_LIMITS: Readonly<Record<LimitedRole, Limits>> = {
  user: { rpm: 600, tpm: 200_000, concurrency: 16 },
  admin: { rpm: 6_000, tpm: 2_000_000, concurrency: 64 },
};

const Value = z.number().int().positive().max(MAX_RATE_LIMIT);
const PartialLimitsVar = z.strictObject({
  rpm: Value.optional(),
  tpm: Value.optional(),
  concurrency: Value.optional(),
});
const RoleVar = PartialLimitsVar.extend({
  models: z
    .record(
      ModelName,
      PartialLimitsVar.refine((l) => Object.keys(l).length > 0, "give at least one limit"),
    )
    .optional(),
});

/** RATE_LIMITS as JSON: {"user": {"rpm": 600, "tpm": 200000, "concurrency": 16, "models": {"big": {"tpm": 20000}}}, "admin": {...}}. */
export const RateLimitsVar = z.strictObject({ user: RoleVar.optional(), admin: RoleVar.optional() });

function defaults(enabled: boolean): RateLimitConfig {
  return {
    enabled,
    roles: {
      user: { limits: DEFAULT_RATE_LIMITS.user, models: new Map() },
      admin: { limits: DEFAULT_RATE_LIMITS.admin, models: new Map() },
    },
  };
}

/** Per isolate: a pure function of the var's text (and its warning, once per value). */
let parsed: { raw: unknown; value: RateLimitConfig } | undefined;

export function rateLimitConfig(env: object): RateLimitConfig {
  const raw = (env as { RATE_LIMITS?: unknown }).RATE_LIMITS;
  if (parsed === undefined || parsed.raw !== raw) parsed = { raw, value: parseRateLimits(raw) };
  return parsed.value;
}

export function parseRateLimits(raw: unknown): RateLimitConfig {
  const text = typeof raw === "string" ? raw.trim() : "";
  if (text === "") return defaults(true);
  if (text.toLowerCase() === "off") return defaults(false);
  let result: ReturnType<typeof RateLimitsVar.safeParse> | undefined;
  try {
    result = RateLimitsVar.safeParse(JSON.parse(text));
  } catch {
    result = undefined;
  }
  if (!result?.success) {
    log("error", 'RATE_LIMITS is neither "off" nor JSON limits per role; the built-in defaults apply', {
      issues: result?.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`) ?? [
        "not JSON",
      ],
      defaults: DEFAULT_RATE_LIMITS,
    });
    return defaults(true);
  }
  const role = (name: LimitedRole): RoleRateLimits => {
    const { models, ...limits } = result.data[name] ?? {};
    return {
      limits: { ...DEFAULT_RATE_LIMITS[name], ...limits },
      models: new Map(Object.entries(models ?? {})),
    };
  };
  return { enabled: true, roles: { user: role("user"), admin: role("admin") } };
}

/**
 * The model limits a request for `model` falls under, and the key they are listed by: the model
 * as named, else its name without `@alias` or `:version` (as POOLS matches models).
 */
export function modelLimits(
  role: RoleRateLimits,
  model: string | undefined,
): { key: string; limits: PartialRateLimits } | undefined {
  if (model === undefined || role.models.size === 0) return undefined;
  const exact = role.models.get(model);
  if (exact !== undefined) return { key: model, limits: exact };
  const at = model.lastIndexOf("@");
  const unaliased = at > 0 ? model.slice(0, at) : model;
  const name = isModelId(unaliased) ? parseModelId(unaliased).name : unaliased;
  const listed = role.models.get(name);
  return listed === undefined ? undefined : { key: name, limits: listed };
}
