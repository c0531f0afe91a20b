// Which deadline a dispatched request has passed at `now`, if any: its own (queue wait plus
// generation), the first chunk of the current attempt, or the silence allowed between chunks.
// Pure; the dispatcher decides what each means (cancel, retry elsewhere, end the stream).
import type { InferenceJob } from "./inference-job.ts";

export type Overdue =
  /** The request's own deadline: cancel, 504 or an error event; says nothing about the agent. */
  | "request"
  /** No first chunk in time: cancel, count against the agent, try another one. */
  | "first_chunk"
  /** A stream went silent: cancel, count against the agent, end the stream with an error. */
  | "idle";

export function overdue(
  job: Pick<InferenceJob, "phase" | "requestDeadline" | "firstChunkDeadline" | "idleDeadline">,
  now: number,
): Overdue | null {
  if (job.phase === "queued" || job.phase === "finished") return null;
  if (job.requestDeadline <= now) return "request";
  if (job.phase === "dispatched" && job.firstChunkDeadline !== null && job.firstChunkDeadline <= now) {
    return "first_chunk";
  }
  if (job.phase === "streaming" && job.idleDeadline !== null && job.idleDeadline <= now) return "idle";
  return null;
}
