// Artifact downloads through the cache against a real HTTP double of the gateway's artifact route:
// the agent's token, verification, resume with Range after a dropped connection, restart when the
// gateway ignores the range, hash mismatch, permanent and transient HTTP failures, stalls.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactCache } from "../../node-agent/artifacts/artifact-cache.ts";
import { ArtifactError } from "../../node-agent/artifacts/download.ts";
import { createLogger } from "../../node-agent/log.ts";
import { ArtifactFiles, bytesOf, sha256, startArtifactServer } from "./artifact-server.ts";

const TOKEN = "agent.token.signature";
const PATH = "/models/demo:2.0.0/artifact" as const;
const SIZE = 256 * 1024;

let dir: string;
let files: ArtifactFiles;
let server: Awaited<ReturnType<typeof startArtifactServer>>;
let logLines: Array<Record<string, unknown>>;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-artifact-download-"));
  files = new ArtifactFiles(TOKEN);
  server = await startArtifactServer(files);
  logLines = [];
});
afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

function cache(options: { idleTimeoutMs?: number; progressMinBytes?: number } = {}) {
  return new ArtifactCache({
    dir,
    budgetBytes: 10 * SIZE,
    inUse: () => new Set(),
    log: createLogger({ level: "debug", write: (line) => logLines.push(JSON.parse(line)) }),
    download: { retryDelayMs: 10, idleTimeoutMs: options.idleTimeoutMs ?? 5_000, ...options },
  });
}

const from = () => ({ url: `${server.baseUrl}${PATH}`, token: TOKEN });

async function failure(promise: Promise<unknown>): Promise<ArtifactError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ArtifactError);
  return err as ArtifactError;
}

describe("artifact download", () => {
  it("fetches with the agent's token, verifies size and sha256, and keeps <sha256>.gguf; a second load does not fetch", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    const artifacts = cache({ progressMinBytes: 1 });
    const path = await artifacts.ensure(ref, "demo:2.0.0", from());
    expect(path).toBe(join(dir, `${ref.sha256}.gguf`));
    expect(sha256(await readFile(path))).toBe(ref.sha256);
    expect(files.requests).toEqual([
      { url: PATH, authorization: `Bearer ${TOKEN}`, range: undefined, status: 200 },
    ]);
    expect((await readdir(dir)).sort()).toEqual([`${ref.sha256}.gguf`, "index.json"].sort());
    expect(await artifacts.ensure(ref, "demo:2.0.0", from())).toBe(path);
    expect(files.requests).toHaveLength(1);
    expect(await artifacts.report()).toEqual({
      budgetBytes: 10 * SIZE,
      usedBytes: SIZE,
      artifacts: [{ model: "demo:2.0.0", sha256: ref.sha256, size: SIZE }],
    });
    // Long downloads log progress; this one is "long" because progressMinBytes is 1.
    const progress = logLines.filter((l) => l.msg === "artifact download progress");
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toMatchObject({ bytes: SIZE, size: SIZE, percent: 100 });
  });

  it("shares one download between concurrent loads of the same artifact", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    const artifacts = cache();
    const paths = await Promise.all([
      artifacts.ensure(ref, "demo:2.0.0", from()),
      artifacts.ensure(ref, "demo:2.0.0", from()),
    ]);
    expect(paths[0]).toBe(paths[1]);
    expect(files.requests).toHaveLength(1);
  });

  it("resumes with Range after the connection drops part-way, and the result verifies", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    files.faults.dropAfter = { bytes: 100_000, times: 1 };
    const path = await cache().ensure(ref, "demo:2.0.0", from());
    expect(sha256(await readFile(path))).toBe(ref.sha256);
    expect(files.requests.map((r) => r.status)).toEqual([200, 206]);
    const resumedFrom = Number(/^bytes=(\d+)-$/.exec(files.requests[1]?.range ?? "")?.[1]);
    expect(resumedFrom).toBeGreaterThan(0);
    expect(resumedFrom).toBeLessThanOrEqual(100_000);
    expect(logLines.find((l) => l.msg === "artifact download failed; retrying")).toMatchObject({
      attempt: 1,
      attempts: 3,
    });
  });

  it("resumes a partial file left by an earlier run, and starts again when the gateway answers 200", async () => {
    const bytes = bytesOf(SIZE);
    const ref = files.add(PATH, bytes);
    await writeFile(join(dir, `${ref.sha256}.partial`), bytes.subarray(0, 5000));
    await cache().ensure(ref, "demo:2.0.0", from());
    expect(files.requests.map((r) => [r.range, r.status])).toEqual([["bytes=5000-", 206]]);

    await rm(dir, { recursive: true, force: true });
    files.requests.length = 0;
    files.faults.ignoreRange = true;
    const again = cache();
    await again.report(); // creates the folder again
    // A partial of other bytes, and a gateway that sends the whole file: written from zero, so it verifies.
    await writeFile(join(dir, `${ref.sha256}.partial`), Buffer.alloc(7000, 0x55));
    const path = await again.ensure(ref, "demo:2.0.0", from());
    expect(files.requests.map((r) => [r.range, r.status])).toEqual([["bytes=7000-", 200]]);
    expect(sha256(await readFile(path))).toBe(ref.sha256);
  });

  it("deletes bytes that do not hash to the registered sha256 and fails with ARTIFACT_HASH_MISMATCH", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    files.files.set(PATH, bytesOf(SIZE, 2)); // same size, other bytes
    const err = await failure(cache().ensure(ref, "demo:2.0.0", from()));
    expect(err.code).toBe("ARTIFACT_HASH_MISMATCH");
    expect(err.message).toContain(ref.sha256);
    expect(await readdir(dir)).toEqual(["index.json"]);
    expect(files.requests).toHaveLength(1); // not retried: the same bytes would come again
  });

  it("fails with ARTIFACT_HASH_MISMATCH as soon as the gateway sends more bytes than registered", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    files.files.set(PATH, bytesOf(SIZE + 10));
    expect((await failure(cache().ensure(ref, "demo:2.0.0", from()))).code).toBe("ARTIFACT_HASH_MISMATCH");
    expect(await readdir(dir)).toEqual(["index.json"]);
  });

  it("fails at once with ARTIFACT_DOWNLOAD_FAILED on 401, naming the status", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    const err = await failure(cache().ensure(ref, "demo:2.0.0", { ...from(), token: "wrong" }));
    expect(err.code).toBe("ARTIFACT_DOWNLOAD_FAILED");
    expect(err.message).toContain("401");
    expect(files.requests).toHaveLength(1);
  });

  it("retries 5xx with backoff and succeeds, or gives up with ARTIFACT_DOWNLOAD_FAILED after 3 attempts", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    files.faults.status = { code: 503, times: 2 };
    await cache().ensure(ref, "demo:2.0.0", from());
    expect(files.requests.map((r) => r.status)).toEqual([503, 503, 200]);

    const other = files.add("/models/demo:3.0.0/artifact", bytesOf(SIZE, 3));
    files.requests.length = 0;
    files.faults.status = { code: 502, times: 10 };
    const err = await failure(
      cache().ensure(other, "demo:3.0.0", { url: `${server.baseUrl}${other.path}`, token: TOKEN }),
    );
    expect(err.code).toBe("ARTIFACT_DOWNLOAD_FAILED");
    expect(err.message).toMatch(/after 3 attempts.*502/);
    expect(files.requests).toHaveLength(3);
  });

  it("treats a stalled body as a failed attempt and resumes where it stalled", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    files.faults.stallAfter = { bytes: 50_000, times: 1 };
    const path = await cache({ idleTimeoutMs: 200 }).ensure(ref, "demo:2.0.0", from());
    expect(sha256(await readFile(path))).toBe(ref.sha256);
    expect(files.requests.map((r) => r.status)).toEqual([200, 206]);
    expect(logLines.find((l) => l.msg === "artifact download failed; retrying")?.error).toMatch(/no data/);
  });

  it("fails with ARTIFACT_DOWNLOAD_FAILED when the gateway is unreachable", async () => {
    const ref = files.add(PATH, bytesOf(SIZE));
    await server.close();
    const err = await failure(cache().ensure(ref, "demo:2.0.0", from()));
    expect(err.code).toBe("ARTIFACT_DOWNLOAD_FAILED");
    server = await startArtifactServer(files); // afterEach closes it again
  });
});
