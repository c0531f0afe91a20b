// A test double of the gateway's GET /models/{id}/artifact for the agent's artifact tests: checks
// the bearer token, answers Range requests with 206, and can be scripted to fail (a status, a
// connection dropped part-way, a stall, bytes that are not the registered ones). Real node:http.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface ServedRequest {
  url: string | undefined;
  authorization: string | undefined;
  range: string | undefined;
  status: number;
}

/** What the next responses do; each fault applies to that many responses, then normal service. */
export interface Faults {
  /** Answer with this status and no body. */
  status?: { code: number; times: number };
  /** Send this many body bytes, then destroy the socket. */
  dropAfter?: { bytes: number; times: number };
  /** Send headers and this many bytes, then nothing (the socket stays open). */
  stallAfter?: { bytes: number; times: number };
  /** Answer 200 with the whole file even when a Range was asked. */
  ignoreRange?: boolean;
}

export class ArtifactFiles {
  readonly files = new Map<string, Buffer>();
  readonly requests: ServedRequest[] = [];
  faults: Faults = {};

  constructor(readonly token: string) {}

  /** Serves `bytes` at `path`; returns the ArtifactRef a load frame would carry. */
  add(path: `/models/${string}/artifact`, bytes: Uint8Array) {
    const buffer = Buffer.from(bytes);
    this.files.set(path, buffer);
    return { path, sha256: sha256(buffer), size: buffer.length, format: "gguf" as const };
  }

  readonly handler: RequestListener = (req, res) => this.serve(req, res);

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const record = (status: number) =>
      this.requests.push({
        url: req.url,
        authorization: req.headers.authorization,
        range: req.headers.range,
        status,
      });
    const body = this.files.get(req.url ?? "");
    const fail = (status: number) => {
      record(status);
      res.writeHead(status, { "content-type": "application/json" }).end(`{"error":{"code":"${status}"}}`);
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      fail(401);
      return;
    }
    if (!body) {
      fail(404);
      return;
    }
    const { status } = this.faults;
    if (status && status.times > 0) {
      status.times -= 1;
      fail(status.code);
      return;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range && !this.faults.ignoreRange) {
      start = Number(range[1]);
      if (start >= body.length) {
        record(416);
        res.writeHead(416, { "content-range": `bytes */${body.length}` }).end();
        return;
      }
      record(206);
      res.writeHead(206, {
        "content-length": body.length - start,
        "content-range": `bytes ${start}-${body.length - 1}/${body.length}`,
        "accept-ranges": "bytes",
      });
    } else {
      record(200);
      res.writeHead(200, { "content-length": body.length, "accept-ranges": "bytes" });
    }
    const rest = body.subarray(start);
    const { dropAfter, stallAfter } = this.faults;
    if (dropAfter && dropAfter.times > 0) {
      dropAfter.times -= 1;
      res.write(rest.subarray(0, dropAfter.bytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    if (stallAfter && stallAfter.times > 0) {
      stallAfter.times -= 1;
      res.write(rest.subarray(0, stallAfter.bytes));
      return;
    }
    res.end(rest);
  }
}

export async function startArtifactServer(files: ArtifactFiles) {
  const server = createServer(files.handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Deterministic filler bytes (not all zeros, so a misplaced range changes the hash). */
export function bytesOf(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
