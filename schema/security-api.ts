// Public HTTP bodies of the security routes (/security, role admin): the prompt-injection policy.
// The policy's own vocabulary (modes, routes, lines) is gateway/security/injection-policy.ts's.
import { z } from "zod";
import { ModelName } from "./protocol.ts";

export const INJECTION_MODES = ["off", "flag", "block"] as const;
export const PROMPT_ROUTES = ["generate", "chat"] as const;

/** PUT /security/injection-policy: set (mode) or remove (null) the admin line of one scope. */
export const InjectionPolicyRequest = z.strictObject({
  mode: z.enum(INJECTION_MODES).nullable(),
  route: z.enum(PROMPT_ROUTES).optional(),
  model: ModelName.optional(),
});
export type InjectionPolicyRequest = z.infer<typeof InjectionPolicyRequest>;

export const InjectionPolicyLine = z.object({
  mode: z.enum(INJECTION_MODES),
  /** null: every route. */
  route: z.enum(PROMPT_ROUTES).nullable(),
  /** null: every model; a name covers its versions and aliases. */
  model: z.string().nullable(),
  /** config: INJECTION_POLICY; admin: PUT /security/injection-policy. */
  source: z.enum(["config", "admin"]),
  updatedAt: z.string().nullable(),
  updatedBy: z.string().nullable(),
});
export type InjectionPolicyLine = z.infer<typeof InjectionPolicyLine>;

export const EffectiveMode = z.object({
  mode: z.enum(INJECTION_MODES),
  /** The line that decided; null: no line matched and the default applies. */
  from: InjectionPolicyLine.nullable(),
});

/** GET (and PUT's answer): every line, and the mode each route gets (for `?model=` when given). */
export const InjectionPolicyResponse = z.object({
  default: z.enum(INJECTION_MODES),
  /** A prompt whose rule scores add up to this is an injection. */
  threshold: z.number(),
  rules: z.array(z.object({ name: z.string(), weight: z.number() })),
  /** How long an isolate may serve an admin line it read before (ms): a PUT applies everywhere within it. */
  cacheMs: z.number().int(),
  lines: z.array(InjectionPolicyLine),
  model: z.string().nullable(),
  effective: z.record(z.enum(PROMPT_ROUTES), EffectiveMode),
});
export type InjectionPolicyResponse = z.infer<typeof InjectionPolicyResponse>;
