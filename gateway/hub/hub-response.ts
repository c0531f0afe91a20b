// The hub's answer when a request is refused before anything streams: the status of its stable
// code and a DispatchErrorBody, which the Worker turns into the caller's error (hub-client.ts).
import type { ErrorCode } from "../../schema/api.ts";
import type { DispatchErrorBody } from "../../schema/hub.ts";
import { STATUS_BY_CODE } from "../errors.ts";

export function errorResponse(
  code: ErrorCode,
  message: string,
  retryAfterSeconds?: number,
  extraHeaders?: Record<string, string>,
): Response {
  const body: DispatchErrorBody = { code, message };
  const headers: Record<string, string> = { "Content-Type": "application/json", ...extraHeaders };
  if (retryAfterSeconds !== undefined) headers["Retry-After"] = String(retryAfterSeconds);
  return new Response(JSON.stringify(body), { status: STATUS_BY_CODE[code], headers });
}
