// Fetches one registry artifact through the gateway with the agent's own token into
// `<sha256>.partial`: resumes with Range after a dropped connection, hashes while it writes,
// retries transient failures with backoff, and renames the file into place only once its size and
// sha256 are the registered ones.
import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rename, stat, unlink } from "node:fs/promises";
import type { LoadFailureCode } from "../../schema/protocol.ts";
import { errorMessage, type Logger, silentLogger } from "../log.ts";

/** A load that did not happen, with the stable code the agent reports in `load_failed`. */
export class ArtifactError extends Error {
  constructor(
    readonly code: LoadFailureCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ArtifactError";
  }
}

export interface DownloadOptions {
  url: string;
  /** The agent's bearer token; the gateway checks it like the WebSocket upgrade's. */
  token: string;
  sha256: string;
  size: number;
  partialPath: string;
  finalPath: string;
  /** Attempts in all, each resuming where the last one stopped. Default 3. */
  attempts?: number;
  /** Wait before the first retry, doubled for each further one. Default 1000. */
  retryDelayMs?: number;
  /** An attempt that receives nothing this long (headers or body) has failed. Default 30000. */
  idleTimeoutMs?: number;
  /** Log progress only for artifacts at least this large. Default 64 MiB. */
  progressMinBytes?: number;
  fetch?: typeof fetch;
  log?: Logger;
}

/** Statuses no retry will fix: the token, the registration or the gateway's route is wrong. */
const PERMANENT = new Set([400, 401, 403, 404, 410]);

/** A failed attempt that the next one may fix (network, timeout, 5xx). */
class TransientFailure extends Error {}

export async function downloadArtifact(options: DownloadOptions): Promise<void> {
  const attempts = options.attempts ?? 3;
  const retryDelayMs = options.retryDelayMs ?? 1000;
  const log = options.log ?? silentLogger;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      await attemptDownload(options, log);
      await rename(options.partialPath, options.finalPath);
      return;
    } catch (err) {
      if (!(err instanceof TransientFailure)) throw err;
      lastError = err;
      if (attempt === attempts) break;
      const delayMs = retryDelayMs * 2 ** (attempt - 1);
      log.warn("artifact download failed; retrying", {
        url: options.url,
        attempt,
        attempts,
        delayMs,
        error: err.message,
      });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
  throw new ArtifactError(
    "ARTIFACT_DOWNLOAD_FAILED",
    `download of ${options.url} failed after ${attempts} attempts: ${errorMessage(lastError)}`,
    { cause: lastError },
  );
}

/** One request: from the partial file's end (206) or from zero (200), then verify when complete. */
async function attemptDownload(options: DownloadOptions, log: Logger): Promise<void> {
  const { url, size, partialPath } = options;
  let have = (await stat(partialPath).catch(() => undefined))?.size ?? 0;
  if (have > size) {
    await unlink(partialPath);
    have = 0;
  }
  if (have < size) await receive(options, have, log);
  const hash = createHash("sha256");
  await hashFile(partialPath, hash);
  const digest = hash.digest("hex");
  if (digest !== options.sha256) {
    await unlink(partialPath).catch(() => {});
    throw new ArtifactError(
      "ARTIFACT_HASH_MISMATCH",
      `${url} hashes to ${digest}, not the registered ${options.sha256}; the file was deleted`,
    );
  }
}

/**
 * Appends the rest of the artifact to the partial file. The hash is taken afterwards over the file
 * as it is on disk (the part kept from earlier attempts first, then the new bytes): one sequential
 * read more than hashing in flight, but it verifies what llama.cpp will read, and one code path
 * serves "complete already", "resumed" and "restarted".
 */
async function receive(options: DownloadOptions, have: number, log: Logger): Promise<void> {
  const { url, size, partialPath } = options;
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  const controller = new AbortController();
  let idle: NodeJS.Timeout | undefined;
  const resetIdle = () => {
    clearTimeout(idle);
    idle = setTimeout(
      () => controller.abort(new TransientFailure(`no data from the gateway for ${idleTimeoutMs} ms`)),
      idleTimeoutMs,
    );
  };
  resetIdle();
  const headers: Record<string, string> = { authorization: `Bearer ${options.token}` };
  if (have > 0) headers.range = `bytes=${have}-`;
  try {
    let response: Response;
    try {
      response = await (options.fetch ?? fetch)(url, { headers, signal: controller.signal });
    } catch (err) {
      throw transient(controller.signal, err);
    }
    let start = 0;
    if (response.status === 206) {
      start = contentRangeStart(response.headers.get("content-range"));
      if (start !== have) {
        await response.body?.cancel();
        await unlink(partialPath).catch(() => {});
        throw new TransientFailure(`the gateway answered a range from ${start}, asked from ${have}`);
      }
    } else if (response.status === 416) {
      await response.body?.cancel();
      await unlink(partialPath).catch(() => {});
      throw new TransientFailure("the gateway refused the range of the partial file; starting again");
    } else if (response.status !== 200) {
      await response.body?.cancel();
      const message = `the gateway answered ${response.status} for ${url}`;
      if (PERMANENT.has(response.status)) throw new ArtifactError("ARTIFACT_DOWNLOAD_FAILED", message);
      throw new TransientFailure(message);
    }
    if (!response.body) throw new TransientFailure("the gateway sent no body");
    const file = await open(partialPath, start === 0 ? "w" : "a");
    const progress = progressLog(options, log, start);
    let written = start;
    try {
      for await (const chunk of response.body) {
        resetIdle();
        written += chunk.byteLength;
        if (written > size) {
          await file.close();
          await unlink(partialPath).catch(() => {});
          throw new ArtifactError(
            "ARTIFACT_HASH_MISMATCH",
            `${url} sent more than the registered ${size} bytes; the file was deleted`,
          );
        }
        await file.write(chunk);
        progress(written);
      }
    } catch (err) {
      if (err instanceof ArtifactError) throw err;
      throw transient(controller.signal, err);
    } finally {
      await file.close().catch(() => {});
    }
    if (written < size) throw new TransientFailure(`the body ended after ${written} of ${size} bytes`);
  } finally {
    clearTimeout(idle);
  }
}

function transient(signal: AbortSignal, err: unknown): TransientFailure {
  if (signal.reason instanceof TransientFailure) return signal.reason;
  return new TransientFailure(errorMessage(err), { cause: err });
}

/** `bytes 100-199/200` -> 100; anything unreadable -> -1 (never equal to what was asked). */
function contentRangeStart(header: string | null): number {
  const match = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header?.trim() ?? "");
  return match ? Number(match[1]) : -1;
}

async function hashFile(path: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
}

/** A progress line every 10% or 5 s, whichever comes first, for large artifacts only. */
function progressLog(options: DownloadOptions, log: Logger, start: number): (written: number) => void {
  const { size, url } = options;
  if (size < (options.progressMinBytes ?? 64 * 1024 * 1024)) return () => {};
  const began = performance.now();
  let lastAt = began;
  let lastTenth = Math.floor((start / size) * 10);
  return (written) => {
    const now = performance.now();
    const tenth = Math.floor((written / size) * 10);
    if (tenth === lastTenth && now - lastAt < 5_000) return;
    lastAt = now;
    lastTenth = tenth;
    const seconds = (now - began) / 1000;
    log.info("artifact download progress", {
      url,
      bytes: written,
      size,
      percent: Math.round((written / size) * 1000) / 10,
      bytesPerSecond: seconds > 0 ? Math.round((written - start) / seconds) : undefined,
    });
  };
}
