// The artifact cache's disk budget: least recently used artifacts are evicted before a download
// that would exceed it, never one in use; what cannot fit is DISK_BUDGET_EXCEEDED with nothing
// evicted; the index survives a restart and is reconciled with the files.
import { mkdtemp, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactCache } from "../../node-agent/artifacts/artifact-cache.ts";
import { ArtifactError } from "../../node-agent/artifacts/download.ts";
import { ArtifactFiles, bytesOf, startArtifactServer } from "./artifact-server.ts";

const TOKEN = "agent.token.signature";
const SIZE = 10_000;

let dir: string;
let files: ArtifactFiles;
let server: Awaited<ReturnType<typeof startArtifactServer>>;
let clock: number;
let inUse: Set<string>;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "orchard-artifact-cache-"));
  files = new ArtifactFiles(TOKEN);
  server = await startArtifactServer(files);
  clock = 1_000;
  inUse = new Set();
});
afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

function cache(budgetBytes = 3 * SIZE) {
  return new ArtifactCache({
    dir,
    budgetBytes,
    inUse: () => inUse,
    now: () => clock++,
    download: { retryDelayMs: 10 },
  });
}

/** Registers version `n` of model m (its own bytes) and returns its ref. */
function version(n: number, size = SIZE) {
  return files.add(`/models/m:${n}.0.0/artifact`, bytesOf(size, n));
}

const ensure = (artifacts: ArtifactCache, ref: ReturnType<typeof version>) =>
  artifacts.ensure(ref, ref.path.slice("/models/".length, -"/artifact".length), {
    url: `${server.baseUrl}${ref.path}`,
    token: TOKEN,
  });

const held = async (artifacts: ArtifactCache) => (await artifacts.report()).artifacts.map((a) => a.model);

describe("artifact cache budget", () => {
  it("evicts the least recently used artifact to make room, and reports what it holds", async () => {
    const artifacts = cache();
    const [v1, v2, v3, v4] = [version(1), version(2), version(3), version(4)];
    await ensure(artifacts, v1);
    await ensure(artifacts, v2);
    await ensure(artifacts, v3);
    await ensure(artifacts, v1); // v1 used again: v2 is now the least recently used
    await ensure(artifacts, v4);
    expect(await held(artifacts)).toEqual(["m:4.0.0", "m:1.0.0", "m:3.0.0"]);
    expect(await readdir(dir)).not.toContain(`${v2.sha256}.gguf`);
    expect((await artifacts.report()).usedBytes).toBe(3 * SIZE);
  });

  it("never evicts an artifact in use, even the least recently used", async () => {
    const artifacts = cache();
    const [v1, v2, v3, v4] = [version(1), version(2), version(3), version(4)];
    for (const v of [v1, v2, v3]) await ensure(artifacts, v);
    inUse = new Set([v1.sha256, v2.sha256]);
    await ensure(artifacts, v4);
    expect((await held(artifacts)).sort()).toEqual(["m:1.0.0", "m:2.0.0", "m:4.0.0"]);
  });

  it("fails with DISK_BUDGET_EXCEEDED and evicts nothing when only artifacts in use could make room", async () => {
    const artifacts = cache();
    const [v1, v2, v3, v4] = [version(1), version(2), version(3), version(4)];
    for (const v of [v1, v2, v3]) await ensure(artifacts, v);
    inUse = new Set([v1.sha256, v2.sha256, v3.sha256]);
    const err = await ensure(artifacts, v4).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ArtifactError);
    expect(err).toMatchObject({ code: "DISK_BUDGET_EXCEEDED" });
    expect((err as Error).message).toMatch(/--cache-budget/);
    expect(await held(artifacts)).toHaveLength(3);
    expect(files.requests).toHaveLength(3); // v4 was never fetched
  });

  it("fails with DISK_BUDGET_EXCEEDED for an artifact larger than the whole budget, keeping the rest", async () => {
    const artifacts = cache();
    await ensure(artifacts, version(1));
    const huge = version(9, 3 * SIZE + 1);
    await expect(ensure(artifacts, huge)).rejects.toMatchObject({ code: "DISK_BUDGET_EXCEEDED" });
    expect(await held(artifacts)).toEqual(["m:1.0.0"]);
  });

  it("evicts a stale partial download before any complete artifact", async () => {
    const artifacts = cache();
    const [v1, v2, v3] = [version(1), version(2), version(3)];
    await ensure(artifacts, v1);
    await ensure(artifacts, v2);
    const stale = "f".repeat(64);
    await writeFile(join(dir, `${stale}.partial`), Buffer.alloc(SIZE));
    expect((await artifacts.report()).usedBytes).toBe(3 * SIZE);
    await ensure(artifacts, v3);
    expect((await held(artifacts)).sort()).toEqual(["m:1.0.0", "m:2.0.0", "m:3.0.0"]);
    expect(await readdir(dir)).not.toContain(`${stale}.partial`);
  });

  it("keeps last use across restarts in index.json, drops entries whose file is gone, adopts stray files", async () => {
    const first = cache();
    const [v1, v2, v3] = [version(1), version(2), version(3)];
    for (const v of [v1, v2, v3]) await ensure(first, v);
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
    expect(index.version).toBe(1);
    expect(index.artifacts).toHaveLength(3);

    await unlink(join(dir, `${v2.sha256}.gguf`));
    const stray = "e".repeat(64);
    await writeFile(join(dir, `${stray}.gguf`), Buffer.alloc(100));
    const second = cache();
    const report = await second.report();
    expect(report.artifacts.map((a) => a.model)).toEqual(["m:3.0.0", "m:1.0.0"]);
    expect(report.usedBytes).toBe(2 * SIZE + 100); // the stray counts, but has no model to report
    // v1 is not fetched again; the stray (least recently used) goes first when room is needed.
    await ensure(second, v1);
    await ensure(second, version(4));
    expect(files.requests).toHaveLength(4);
    expect(await readdir(dir)).not.toContain(`${stray}.gguf`);
  });

  it("rebuilds an unreadable index from the files", async () => {
    const first = cache();
    const v1 = version(1);
    await ensure(first, v1);
    await writeFile(join(dir, "index.json"), "{ not json");
    const report = await cache().report();
    expect(report.usedBytes).toBe(SIZE);
    expect(report.artifacts).toEqual([]); // the file is kept (and evictable); its model is unknown until loaded again
  });
});
