// JSON request bodies: media type, size (declared and actual bytes), syntax, then the zod schema.
// The parsed value is `c.get("body")`, typed from the schema.
import type { MiddlewareHandler } from "hono";
import type { z } from "zod";
import { ErrorCode, Limits } from "../../../schema/api.ts";
import { GatewayError } from "../../errors.ts";

/** Strict UTF-8 (invalid bytes are INVALID_JSON); decode() without `stream` keeps no state. */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

export interface JsonBodyOptions<S extends z.ZodType> {
  maxBytes?: number;
  /**
   * The body a request without one stands for (no Content-Type, no bytes), for routes whose body is
   * optional; unset, a body is required.
   */
  whenAbsent?: z.input<S>;
}

export function jsonBody<S extends z.ZodType>(
  schema: S,
  { maxBytes = Limits.maxBodyBytes, whenAbsent }: JsonBodyOptions<S> = {},
): MiddlewareHandler<{ Variables: { body: z.output<S> } }> {
  return async function jsonBody(c, next) {
    if (whenAbsent !== undefined && hasNoBody(c.req.raw)) {
      const result = schema.safeParse(whenAbsent);
      if (!result.success) throw invalidRequest(result.error);
      c.set("body", result.data);
      await next();
      return;
    }
    if (!isJsonMediaType(c.req.header("Content-Type"))) {
      throw new GatewayError("UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json");
    }
    const lengthHeader = c.req.header("Content-Length");
    const declared = lengthHeader === undefined ? Number.NaN : Number(lengthHeader);
    if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge(maxBytes);
    // With a Content-Length the runtime delivers exactly that many bytes (HTTP framing), so a
    // declared size within the limit can be read in one call; otherwise count as it streams in.
    const bytes =
      Number.isFinite(declared) && c.req.raw.body !== null
        ? new Uint8Array(await c.req.raw.arrayBuffer())
        : await readLimited(c.req.raw.body, maxBytes);
    if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
    let json: unknown;
    try {
      json = JSON.parse(utf8.decode(bytes));
    } catch {
      throw new GatewayError("INVALID_JSON", "request body is not valid JSON");
    }
    const result = schema.safeParse(json);
    if (!result.success) throw invalidRequest(result.error);
    c.set("body", result.data);
    await next();
  };
}

function hasNoBody(request: Request): boolean {
  if (request.headers.has("Content-Type")) return false;
  return request.body === null || request.headers.get("Content-Length") === "0";
}

function isJsonMediaType(header: string | undefined): boolean {
  const type = header?.split(";")[0]?.trim().toLowerCase();
  return type === "application/json" || (type?.startsWith("application/") === true && type.endsWith("+json"));
}

function tooLarge(maxBytes: number): GatewayError {
  return new GatewayError("PAYLOAD_TOO_LARGE", `request body exceeds ${maxBytes} bytes`);
}

/** Reads the body, stopping as soon as it exceeds the limit (Content-Length may be absent or lie). */
async function readLimited(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<Uint8Array> {
  if (body === null) return new Uint8Array();
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(maxBytes);
    }
    parts.push(value);
  }
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}

/**
 * A 400 naming the offending field, e.g. `messages: Too small: expected array to have >=1 items`.
 * An issue that carries its own code (CodedIssueParams, e.g. UNSUPPORTED_PARAMETER) wins over
 * plain validation failures: it says what the caller most needs to know (the field exists and is
 * valid, but the gateway will not do it), so its code is the answer and not INVALID_REQUEST.
 */
export function invalidRequest(error: z.ZodError): GatewayError {
  const coded = error.issues.find((i) => issueCode(i) !== undefined);
  const issue = coded ?? error.issues[0];
  if (issue === undefined) return new GatewayError("INVALID_REQUEST", "invalid request body");
  let path = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") path = [path, ...issue.keys].filter(Boolean).join(".");
  const field = path === "" ? "body" : path;
  return new GatewayError(issueCode(issue) ?? "INVALID_REQUEST", `${field}: ${issue.message}`, {
    param: field,
  });
}

function issueCode(issue: z.ZodError["issues"][number]): ErrorCode | undefined {
  if (issue.code !== "custom") return undefined;
  const parsed = ErrorCode.safeParse(issue.params?.code);
  return parsed.success ? parsed.data : undefined;
}
