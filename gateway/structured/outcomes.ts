// A structured request's end reported to its pool's hub (valid or not, after how many attempts),
// which counts it for /metrics; in waitUntil, so the answer never waits for it.
import type { Context } from "hono";
import { DEFAULT_POOL } from "../../schema/hub.ts";
import type { StructuredOutputRecord } from "../hub/hub-telemetry.ts";
import { poolHub } from "../inference/hub-client.ts";
import { describeError, log } from "../log.ts";
import type { AppEnv } from "../types.ts";

/** Counted by the first pool the request was sent to (the one that answers, but for a failover). */
export function recordStructuredOutcome<E extends AppEnv>(
  c: Context<E>,
  pools: readonly string[],
  record: StructuredOutputRecord,
): void {
  const pool = pools[0] ?? DEFAULT_POOL;
  const write = Promise.resolve()
    .then(() => poolHub(c.env, pool).recordStructuredOutput(record))
    .catch((err: unknown) =>
      log("error", "structured output outcome not counted", {
        requestId: c.get("requestId"),
        pool,
        ...describeError(err),
      }),
    );
  try {
    c.executionCtx.waitUntil(write);
  } catch {
    // No execution context (a test calling the app directly): the RPC runs all the same.
  }
}
