// ml_inference_injection_detections_total: prompts the injection rules flagged or blocked, counted
// in D1 (injection_detections: one row per route, top rule and mode) so that every isolate adds
// to, and /metrics reads, the same numbers. Detections come from the Worker, before any pool's
// hub sees the request (a blocked one never reaches it), hence D1 rather than a hub's counters.
//
// Writes are off the answer's path (waitUntil) and at most one per isolate at a time: detections
// that arrive while one is being written are added up and written by the same writer next, so a
// flood of attack prompts costs D1 a few writes a second per isolate, not one per prompt.
import { sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/d1";
import { injectionDetections } from "../../schema/db.ts";
import type { MetricFamily, MetricName, Sample } from "../../schema/monitoring.ts";
import { describeError, log } from "../log.ts";
import type { InjectionMode, PromptRoute } from "./injection-policy.ts";
import type { RuleName } from "./injection-rules.ts";

export const DETECTIONS_METRIC = "ml_inference_injection_detections_total" satisfies MetricName;

/** Rounds one writer does before it leaves what is left to the next detection's writer. */
const MAX_ROUNDS = 8;

export class DetectionCounter {
  readonly #pending = new Map<string, number>();
  #writing = false;

  /**
   * Counts one detection; returns the write to wait for (waitUntil), or null when the isolate's
   * writer already running will carry it.
   */
  record(
    db: D1Database,
    route: PromptRoute,
    rule: RuleName,
    mode: Exclude<InjectionMode, "off">,
  ): Promise<void> | null {
    const key = `${route}\n${rule}\n${mode}`;
    this.#pending.set(key, (this.#pending.get(key) ?? 0) + 1);
    if (this.#writing) return null;
    this.#writing = true;
    return this.#write(db).finally(() => {
      this.#writing = false;
    });
  }

  async #write(db: D1Database): Promise<void> {
    const d = drizzle(db);
    for (let round = 0; round < MAX_ROUNDS && this.#pending.size > 0; round++) {
      const batch = [...this.#pending];
      this.#pending.clear();
      try {
        const [first, ...rest] = batch.map(([key, n]) => {
          const [route = "", rule = "", mode = ""] = key.split("\n");
          return d
            .insert(injectionDetections)
            .values({ route, rule, mode, count: n })
            .onConflictDoUpdate({
              target: [injectionDetections.route, injectionDetections.rule, injectionDetections.mode],
              set: { count: sql`${injectionDetections.count} + ${n}` },
            });
        });
        if (first !== undefined) await d.batch([first, ...rest]);
      } catch (err) {
        log("error", "injection detections: D1 refused the counts; they are lost", {
          detections: batch.reduce((sum, [, n]) => sum + n, 0),
          ...describeError(err),
        });
      }
    }
  }
}

/** The isolate's writer (its pending counts are on their way to D1, not a count of its own). */
export const detectionCounter = new DetectionCounter();

/** The family /metrics renders, from D1; an empty family when D1 does not answer (logged). */
export async function detectionFamily(db: D1Database): Promise<MetricFamily> {
  const samples: Sample[] = [];
  try {
    const rows = await drizzle(db).select().from(injectionDetections).all();
    for (const row of rows) {
      samples.push({ labels: { route: row.route, rule: row.rule, mode: row.mode }, value: row.count });
    }
  } catch (err) {
    log("error", "injection detections: D1 did not answer for /metrics", describeError(err));
  }
  return { name: DETECTIONS_METRIC, type: "counter", samples };
}
