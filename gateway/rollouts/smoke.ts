// A blue-green deployment's smoke test: each configured prompt goes to the new version by its
// pinned id (name:version, never split by a rollout) through the normal dispatch path, and must
// come back complete within the deadline.
import { readConfig } from "../config.ts";
import { GatewayError } from "../errors.ts";
import { dispatchToHub, poolOrder } from "../inference/hub-client.ts";
import { samplingParams } from "../inference/openai.ts";

export interface SmokeResult {
  ok: boolean;
  at: number;
  results: { prompt: string; ok: boolean; ms: number; error?: string }[];
}

/** Tokens each smoke prompt may generate: enough to prove the model answers, cheap to run. */
const SMOKE_MAX_TOKENS = 16;

export async function runSmokeTest(
  env: Env,
  servedAs: string,
  prompts: readonly string[],
  deadlineMs: number,
  deploymentId: string,
): Promise<SmokeResult> {
  const config = readConfig(env);
  const results: SmokeResult["results"] = [];
  // One after another: a smoke test checks the version answers, not how it takes load.
  for (const [index, prompt] of prompts.entries()) {
    const started = Date.now();
    const requestId = `smoke-${deploymentId}-${index}-${started}`;
    try {
      const response = await dispatchToHub(
        env,
        {
          requestId,
          model: servedAs,
          prompt,
          params: samplingParams({ maxTokens: SMOKE_MAX_TOKENS, temperature: 0 }),
          timeoutMs: deadlineMs,
          response: { api: "generate", stream: false, includeUsage: false, requestId, receivedAt: started },
          subject: "orchard-smoke-test",
          caller: "controller",
        },
        poolOrder(config.pools, servedAs, requestId),
      );
      const body = (await response.json().catch(() => null)) as { text?: unknown } | null;
      const ms = Date.now() - started;
      if (typeof body?.text !== "string") {
        results.push({ prompt, ok: false, ms, error: "the answer had no text" });
      } else if (ms > deadlineMs) {
        results.push({ prompt, ok: false, ms, error: `answered after the ${deadlineMs} ms deadline` });
      } else {
        results.push({ prompt, ok: true, ms });
      }
    } catch (err) {
      const error = err instanceof GatewayError ? `${err.code}: ${err.message}` : "internal error";
      results.push({ prompt, ok: false, ms: Date.now() - started, error });
    }
  }
  return { ok: results.every((r) => r.ok), at: Date.now(), results };
}
