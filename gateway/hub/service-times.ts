// Recent time from dispatch to `done`, per model and across the pool: what Retry-After is
// estimated from when a queue is full.
import type { ModelId } from "../../schema/model-id.ts";
import { ewma, retryAfterSeconds } from "./scheduling.ts";

export class ServiceTimes {
  readonly #byModel = new Map<ModelId, number>();
  #pool: number | null = null;

  record(model: ModelId, ms: number): void {
    this.#byModel.set(model, ewma(this.#byModel.get(model) ?? null, ms));
    this.#pool = ewma(this.#pool, ms);
  }

  /** Seconds a caller refused for `model` should wait, given its queue and the slots serving it. */
  retryAfter(model: ModelId, queued: number, slots: number): number {
    return retryAfterSeconds({ queued, slots, serviceTimeMs: this.#byModel.get(model) ?? this.#pool });
  }
}
