// When the AgentHub must next wake: the earliest moment something is due, or null when nothing
// is (an idle pool with no agents, no requests and nothing to flush sleeps until called). Pure.

export interface AlarmInputs {
  now: number;
  /** Connected agents that have not said hello: when each one's hello deadline passes. */
  helloDeadlines: Iterable<number>;
  /**
   * Ready agents: the last moment each was heard from (frame or answered ping). The hub only has
   * to look when the earliest of them could have gone silent for the heartbeat timeout.
   */
  lastActivity: Iterable<number>;
  heartbeatTimeoutMs: number;
  /** When connected agents' tokens expire (epoch ms). */
  tokenExpiries: Iterable<number>;
  /** The dispatcher's next deadline (queue, request, first chunk, idle, cancel grace, half-open). */
  requestDeadline: number | null;
  /** When buffered counts (breakers, metrics, known models) are due in storage, if any are. */
  flushAt: number | null;
}

export function nextAlarm(inputs: AlarmInputs): number | null {
  let next = Number.POSITIVE_INFINITY;
  for (const at of inputs.helloDeadlines) next = Math.min(next, at);
  for (const at of inputs.lastActivity) next = Math.min(next, at + inputs.heartbeatTimeoutMs);
  for (const at of inputs.tokenExpiries) next = Math.min(next, at);
  if (inputs.requestDeadline !== null) next = Math.min(next, inputs.requestDeadline);
  if (inputs.flushAt !== null) next = Math.min(next, inputs.flushAt);
  if (next === Number.POSITIVE_INFINITY) return null;
  // Never in the past: an overdue check runs at once, not at a time already gone.
  return Math.max(next, inputs.now);
}
