// The input side of a prompt route, as one middleware after the body's validation: the route's
// content filters (block: 400 CONTENT_FILTERED; redact: the prompt goes on with the match
// replaced), then the injection rules under the route's and model's policy (off: not scored;
// flag: served, counted, logged with the request id; block: 400 PROMPT_INJECTION naming the rule).
// Neither a log line nor an error ever carries the prompt's text.
import type { MiddlewareHandler } from "hono";
import type { ChatCompletionRequest, GenerateRequest } from "../../schema/api.ts";
import { GatewayError } from "../errors.ts";
import { log } from "../log.ts";
import type { AppEnv } from "../types.ts";
import { inputFilters, readSecurityConfig } from "./config.ts";
import { blockingFilter, redactFiltered } from "./content-filters.ts";
import { detectionCounter } from "./detections.ts";
import { detectInjection, type InjectionVerdict } from "./injection.ts";
import {
  type PolicyEntry,
  type PromptRoute,
  resolveInjectionMode,
  type SourcedEntry,
} from "./injection-policy.ts";
import { policyCache } from "./policy-store.ts";

/** How a route's body holds its prompt. */
export interface PromptParts<B> {
  model(body: B): string | undefined;
  /** The texts the injection rules score, each with the body field it came from. */
  scored(body: B): Iterable<{ text: string; param: string }>;
  /** Every text content filters read (a chat's system messages too), rewritten by `map`. */
  mapTexts(body: B, map: (text: string, param: string) => string): B;
}

export const generateParts: PromptParts<GenerateRequest> = {
  model: (body) => body.model,
  scored: (body) => [{ text: body.prompt, param: "prompt" }],
  mapTexts: (body, map) => {
    const prompt = map(body.prompt, "prompt");
    return prompt === body.prompt ? body : { ...body, prompt };
  },
};

/**
 * A chat's user messages are scored: system and developer messages are the calling
 * application's own words, and assistant turns the model's. Content filters read them all.
 */
export const chatParts: PromptParts<ChatCompletionRequest> = {
  model: (body) => body.model,
  *scored(body) {
    for (const [i, m] of body.messages.entries()) {
      if (m.role === "user") yield { text: m.content, param: `messages.${i}.content` };
    }
  },
  mapTexts: (body, map) => {
    let changed = false;
    const messages = body.messages.map((m, i) => {
      const content = map(m.content, `messages.${i}.content`);
      if (content === m.content) return m;
      changed = true;
      return { ...m, content };
    });
    return changed ? { ...body, messages } : body;
  },
};

export function screenPrompt<B>(
  route: PromptRoute,
  parts: PromptParts<B>,
): MiddlewareHandler<AppEnv & { Variables: { body: B } }> {
  return async function screenPrompt(c, next) {
    const config = readSecurityConfig(c.env);
    const requestId = c.get("requestId");
    let body = c.get("body");

    const filters = inputFilters(config, route);
    if (filters.length > 0) {
      body = parts.mapTexts(body, (text, param) => {
        const blocking = blockingFilter(text, filters);
        if (blocking !== null) {
          log("warn", "prompt refused by a content filter", {
            requestId,
            route,
            filter: blocking.name,
            param,
          });
          throw new GatewayError(
            "CONTENT_FILTERED",
            `the prompt matches the content filter ${blocking.name}`,
            {
              param,
            },
          );
        }
        return redactFiltered(text, filters);
      });
      c.set("body", body);
    }

    const model = parts.model(body);
    const admin: readonly SourcedEntry[] = await policyCache.entries(c.env.DB, config.injectionPolicyCacheMs);
    const { mode } = resolveInjectionMode(policyLines(config.injectionPolicy, admin), route, model);
    if (mode === "off") return next();

    let worst: InjectionVerdict | null = null;
    let param = "";
    for (const part of parts.scored(body)) {
      const verdict = detectInjection(part.text);
      if (verdict.flagged && (worst === null || verdict.score > worst.score)) {
        worst = verdict;
        param = part.param;
      }
    }
    if (worst === null || worst.rule === null) return next();

    log("warn", mode === "block" ? "prompt injection blocked" : "prompt injection flagged", {
      requestId,
      route,
      model,
      rule: worst.rule,
      score: worst.score,
      rules: worst.findings.map((f) => f.rule),
      param,
    });
    const write = detectionCounter.record(c.env.DB, route, worst.rule, mode);
    if (write !== null) waitUntil(c, write);
    if (mode === "block") {
      throw new GatewayError(
        "PROMPT_INJECTION",
        `the prompt was refused by the prompt-injection rule ${worst.rule}`,
        {
          param,
        },
      );
    }
    return next();
  };
}

/** The config's lines, then the admins' (an admin's line wins a tie of specificity). */
export function policyLines(config: readonly PolicyEntry[], admin: readonly SourcedEntry[]): SourcedEntry[] {
  return [...config.map((entry) => ({ ...entry, source: "config" as const })), ...admin];
}

function waitUntil(
  c: { executionCtx: { waitUntil(work: Promise<unknown>): void } },
  work: Promise<void>,
): void {
  try {
    c.executionCtx.waitUntil(work);
  } catch {
    // No execution context (app.request in a test): the write runs on its own.
    void work;
  }
}

/** POST /generate's and POST /v1/chat/completions' gates (after their jsonBody). */
export const generateGate = screenPrompt("generate", generateParts);
export const chatGate = screenPrompt("chat", chatParts);
