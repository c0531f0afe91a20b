// Server-sent events: the message encoding and the response headers of every stream.

/** One SSE message; `data` is JSON-encoded unless it is already a string. */
export function sseMessage(data: unknown, event?: string): string {
  const payload = typeof data === "string" ? data : JSON.stringify(data);
  return `${event === undefined ? "" : `event: ${event}\n`}data: ${payload}\n\n`;
}

export const SSE_HEADERS = {
  "Content-Type": "text/event-stream; charset=utf-8",
  "Cache-Control": "no-cache",
} as const;
