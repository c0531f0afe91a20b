// Artifacts in R2: an upload streams into a fresh key while it is hashed (crypto.DigestStream), and
// is kept only when its size and sha256 equal the registration's; agents download with Range.
import type { ModelVersionRow } from "../../schema/db.ts";
import { GatewayError } from "../errors.ts";
import { log } from "../log.ts";
import { publishRoutingTable } from "./publish.ts";
import { type Actor, eventInsert, modelIdOf, registryDb } from "./versions.ts";

/** wrangler.toml's default for ARTIFACT_MAX_BYTES (16 GiB) when the var is missing or malformed. */
const DEFAULT_MAX_BYTES = 17_179_869_184;

export function artifactMaxBytes(env: Env): number {
  const value = Number((env as { ARTIFACT_MAX_BYTES?: string }).ARTIFACT_MAX_BYTES);
  return Number.isSafeInteger(value) && value > 0 ? value : DEFAULT_MAX_BYTES;
}

function artifactOf(row: ModelVersionRow): { sha256: string; size: number } {
  if (row.source.kind !== "artifact" || row.sha256 === null || row.size === null) {
    throw new GatewayError(
      "SOURCE_NOT_ARTIFACT",
      `${modelIdOf(row)} is registered with source "${row.source.kind}", not an uploaded artifact`,
    );
  }
  return { sha256: row.sha256, size: row.size };
}

/**
 * Stores the request body as the version's artifact. Refused before a byte is read: a version
 * that is no artifact (409), one already stored (409 ARTIFACT_EXISTS, artifacts are immutable), a
 * size over ARTIFACT_MAX_BYTES (413), a Content-Length other than the registered size (400). The
 * body goes to a key of its own upload; a hash or length that disagrees deletes it again
 * (artifact_refused), and a concurrent upload that committed first wins (this one is deleted).
 */
export async function storeArtifact(env: Env, row: ModelVersionRow, request: Request, actor: Actor) {
  const expected = artifactOf(row);
  const modelId = modelIdOf(row);
  if (row.artifactStoredAt !== null)
    throw new GatewayError("ARTIFACT_EXISTS", `${modelId} already has its artifact`);
  const max = artifactMaxBytes(env);
  const declared = Number(request.headers.get("Content-Length") ?? Number.NaN);
  if (expected.size > max || declared > max) {
    throw new GatewayError("ARTIFACT_TOO_LARGE", `artifacts are limited to ${max} bytes`);
  }
  if (declared !== expected.size || request.body === null) {
    throw new GatewayError(
      "ARTIFACT_SIZE_MISMATCH",
      `Content-Length must be the registered size, ${expected.size} bytes`,
      { param: "Content-Length" },
    );
  }
  const key = `models/${row.name}/${row.version}/${crypto.randomUUID()}`;
  const digest = new crypto.DigestStream("SHA-256");
  const digestWriter = digest.getWriter();
  // Hashing in the pipeline (not a tee) keeps backpressure: nothing buffers ahead of R2.
  const hashing = new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      await digestWriter.write(chunk);
      controller.enqueue(chunk);
    },
    async flush() {
      await digestWriter.close();
    },
  });
  const db = registryDb(env.DB);
  const refuse = async (reason: string, detail: Record<string, unknown>) => {
    await env.ARTIFACTS.delete(key).catch(() => {});
    await eventInsert(db, actor, {
      name: row.name,
      version: row.version,
      kind: "artifact_refused",
      detail: { reason, expected_sha256: expected.sha256, expected_size: expected.size, ...detail },
    });
  };
  try {
    await env.ARTIFACTS.put(
      key,
      request.body.pipeThrough(hashing).pipeThrough(new FixedLengthStream(expected.size)),
      {
        httpMetadata: { contentType: "application/octet-stream" },
        customMetadata: { modelId, sha256: expected.sha256 },
      },
    );
  } catch (err) {
    log("warn", "artifact upload ended short or long", { modelId, error: String(err) });
    await refuse("size", {});
    throw new GatewayError(
      "ARTIFACT_SIZE_MISMATCH",
      `the upload was not exactly ${expected.size} bytes; nothing kept`,
    );
  }
  const actual = hex(await digest.digest);
  if (actual !== expected.sha256) {
    await refuse("sha256", { actual_sha256: actual });
    throw new GatewayError(
      "ARTIFACT_HASH_MISMATCH",
      `the upload's sha256 is ${actual}, the registration says ${expected.sha256}; nothing kept`,
    );
  }
  const now = Date.now();
  // The event first and only while none is stored, then the claim: one transaction, one winner.
  const [, claim] = await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO model_events (name, version, kind, actor, at, request_id, detail)
       SELECT ?1, ?2, 'artifact_uploaded', ?3, ?4, ?5, ?6
       WHERE EXISTS (SELECT 1 FROM model_versions WHERE id = ?7 AND artifact_stored_at IS NULL)`,
    ).bind(
      row.name,
      row.version,
      actor.sub,
      now,
      actor.requestId,
      JSON.stringify({ sha256: actual, size: expected.size }),
      row.id,
    ),
    env.DB.prepare(
      "UPDATE model_versions SET artifact_key = ?1, artifact_stored_at = ?2 WHERE id = ?3 AND artifact_stored_at IS NULL",
    ).bind(key, now, row.id),
  ]);
  if ((claim?.meta.changes ?? 0) === 0) {
    await env.ARTIFACTS.delete(key).catch(() => {});
    throw new GatewayError("ARTIFACT_EXISTS", `${modelId} already has its artifact`);
  }
  await publishRoutingTable(env);
  return { model_id: modelId, sha256: actual, size: expected.size, stored_at: new Date(now).toISOString() };
}

/** The artifact, whole (200) or one byte range (206); ETag is its sha256. */
export async function serveArtifact(env: Env, row: ModelVersionRow, request: Request): Promise<Response> {
  const { sha256, size } = artifactOf(row);
  if (row.artifactKey === null) {
    throw new GatewayError("ARTIFACT_NOT_FOUND", `${modelIdOf(row)} has no uploaded artifact yet`);
  }
  const range = parseRange(request.headers.get("Range"), size);
  const object = await env.ARTIFACTS.get(row.artifactKey, range === null ? {} : { range });
  if (object === null)
    throw new GatewayError("ARTIFACT_NOT_FOUND", `${modelIdOf(row)}'s artifact is missing`);
  const headers: Record<string, string> = {
    "Content-Type": "application/octet-stream",
    "Accept-Ranges": "bytes",
    ETag: `"${sha256}"`,
    "Cache-Control": "private, max-age=31536000, immutable",
  };
  if (range === null) {
    headers["Content-Length"] = String(size);
    return new Response(object.body, { status: 200, headers });
  }
  headers["Content-Length"] = String(range.length);
  headers["Content-Range"] = `bytes ${range.offset}-${range.offset + range.length - 1}/${size}`;
  return new Response(object.body, { status: 206, headers });
}

/**
 * One byte range of `bytes=a-b`, `bytes=a-` or `bytes=-n`; null without a Range header. A range
 * that is malformed, multiple, or outside the object is 416 with `Content-Range: bytes * /size`.
 */
export function parseRange(header: string | null, size: number): { offset: number; length: number } | null {
  if (header === null) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  const unsatisfiable = () =>
    new GatewayError("RANGE_NOT_SATISFIABLE", `one range within 0-${size - 1} is supported, as bytes=a-b`, {
      headers: { "Content-Range": `bytes */${size}` },
    });
  if (!match || (match[1] === "" && match[2] === "")) throw unsatisfiable();
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0) throw unsatisfiable();
    const length = Math.min(suffix, size);
    return { offset: size - length, length };
  }
  const start = Number(match[1]);
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) throw unsatisfiable();
  return { offset: start, length: end - start + 1 };
}

function hex(buffer: ArrayBuffer): string {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
