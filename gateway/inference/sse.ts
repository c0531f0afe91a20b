// Server-sent events: encoding, and a response body fed by an async generator that stops the
// generation upstream when the caller goes away.
const encoder = new TextEncoder();

/** One SSE message; `data` is JSON-encoded unless it is already a string. */
export function sseMessage(data: unknown, event?: string): string {
  const payload = typeof data === "string" ? data : JSON.stringify(data);
  return `${event === undefined ? "" : `event: ${event}\n`}data: ${payload}\n\n`;
}

export const SSE_HEADERS = {
  "Content-Type": "text/event-stream; charset=utf-8",
  "Cache-Control": "no-cache",
} as const;

/**
 * A pull-based body: nothing is produced faster than the caller reads. `onCancel` runs when the
 * caller disconnects, even while the generator is waiting for the next upstream event.
 */
export function sseBody(
  messages: AsyncGenerator<string>,
  onCancel: () => Promise<void>,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await messages.next();
      try {
        if (done) controller.close();
        else controller.enqueue(encoder.encode(value));
      } catch {
        // Cancelled while we waited for the next event.
      }
    },
    async cancel() {
      await onCancel();
      await messages.return(undefined);
    },
  });
}
