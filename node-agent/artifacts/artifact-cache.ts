// The agent's artifact cache: verified registry artifacts as `<dir>/<sha256>.gguf` (or `.tar`),
// under a disk budget. Before a download that would exceed it, the least recently used artifacts
// are evicted, never one whose model is loaded or loading; last use is kept in `<dir>/index.json`,
// written atomically (a temporary file renamed over it).
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { ArtifactRef } from "../../schema/registry.ts";
import { errorMessage, type Logger, silentLogger } from "../log.ts";
import { ArtifactError, type DownloadOptions, downloadArtifact } from "./download.ts";

const INDEX_FILE = "index.json";
const ARTIFACT_FILE = /^([0-9a-f]{64})\.(gguf|tar)$/;
const PARTIAL_FILE = /^([0-9a-f]{64})\.partial$/;

const IndexEntry = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().nonnegative(),
  format: z.enum(["gguf", "mlx-tar"]),
  /** The model id it was last loaded as; absent for a file found on disk but not in the index. */
  model: z.string().optional(),
  /** Epoch ms of the last load or unload. */
  lastUsedAt: z.number(),
});
type IndexEntry = z.infer<typeof IndexEntry>;
const IndexFile = z.object({ version: z.literal(1), artifacts: z.array(IndexEntry) });

export interface CacheReport {
  budgetBytes: number;
  usedBytes: number;
  artifacts: Array<{ model: string; sha256: string; size: number }>;
}

export interface ArtifactCacheOptions {
  dir: string;
  budgetBytes: number;
  /** Artifacts that must stay: those of models loaded or loading. */
  inUse: () => ReadonlySet<string>;
  now?: () => number;
  log?: Logger;
  /** Passed to every download (retries, timeouts, a fetch for tests). */
  download?: Pick<
    DownloadOptions,
    "attempts" | "retryDelayMs" | "idleTimeoutMs" | "progressMinBytes" | "fetch"
  >;
}

export interface Fetchable {
  url: string;
  token: string;
}

export class ArtifactCache {
  readonly dir: string;
  readonly budgetBytes: number;
  private readonly entries = new Map<string, IndexEntry>();
  /** Downloads under way, by sha256, so concurrent loads of one artifact share one. */
  private readonly downloads = new Map<string, Promise<string>>();
  /** Bytes promised to downloads under way and not on disk yet. */
  private reserved = 0;
  private opened: Promise<void> | undefined;
  /** Index changes and space decisions run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly now: () => number;
  private readonly log: Logger;

  constructor(private readonly options: ArtifactCacheOptions) {
    if (!Number.isSafeInteger(options.budgetBytes) || options.budgetBytes < 1) {
      throw new RangeError("budgetBytes must be a positive integer");
    }
    this.dir = options.dir;
    this.budgetBytes = options.budgetBytes;
    this.now = options.now ?? Date.now;
    this.log = options.log ?? silentLogger;
  }

  pathOf(sha256: string, format: ArtifactRef["format"]): string {
    return join(this.dir, `${sha256}.${format === "gguf" ? "gguf" : "tar"}`);
  }

  /**
   * The verified file for `ref`: from the cache, or downloaded into it after making room. Throws
   * ArtifactError (DISK_BUDGET_EXCEEDED, ARTIFACT_DOWNLOAD_FAILED, ARTIFACT_HASH_MISMATCH).
   */
  async ensure(ref: ArtifactRef, model: string, from: Fetchable): Promise<string> {
    await this.open();
    const path = this.pathOf(ref.sha256, ref.format);
    const cached = this.entries.get(ref.sha256);
    if (cached && (await fileSize(path)) === ref.size) {
      await this.serially(() => this.record({ ...cached, model, lastUsedAt: this.now() }));
      return path;
    }
    let download = this.downloads.get(ref.sha256);
    if (!download) {
      download = this.download(ref, model, from, path).finally(() => this.downloads.delete(ref.sha256));
      this.downloads.set(ref.sha256, download);
    }
    return download;
  }

  /** Marks an artifact used now (a model loaded from it was unloaded), so it is evicted last. */
  async touch(sha256: string): Promise<void> {
    await this.open();
    const entry = this.entries.get(sha256);
    if (entry) await this.serially(() => this.record({ ...entry, lastUsedAt: this.now() }));
  }

  /** What health.cache reports: budget, bytes on disk (partial downloads too), artifacts by last use. */
  async report(): Promise<CacheReport> {
    await this.open();
    const entries = [...this.entries.values()].sort((a, b) => b.lastUsedAt - a.lastUsedAt);
    return {
      budgetBytes: this.budgetBytes,
      usedBytes: (await this.usedOnDisk()).total,
      artifacts: entries
        .filter((e): e is IndexEntry & { model: string } => e.model !== undefined)
        .slice(0, 256)
        .map(({ model, sha256, size }) => ({ model, sha256, size })),
    };
  }

  private async download(ref: ArtifactRef, model: string, from: Fetchable, path: string): Promise<string> {
    const partialPath = join(this.dir, `${ref.sha256}.partial`);
    const need = ref.size - Math.min(ref.size, (await fileSize(partialPath)) ?? 0);
    await this.serially(async () => {
      await this.makeRoom(need, ref.sha256);
      this.reserved += need;
    });
    const started = performance.now();
    this.log.info("artifact download started", { model, sha256: ref.sha256, size: ref.size, url: from.url });
    try {
      await downloadArtifact({
        ...this.options.download,
        url: from.url,
        token: from.token,
        sha256: ref.sha256,
        size: ref.size,
        partialPath,
        finalPath: path,
        log: this.log,
      });
    } finally {
      this.reserved -= need;
    }
    this.log.info("artifact downloaded and verified", {
      model,
      sha256: ref.sha256,
      size: ref.size,
      ms: Math.round(performance.now() - started),
    });
    await this.serially(() =>
      this.record({ sha256: ref.sha256, size: ref.size, format: ref.format, model, lastUsedAt: this.now() }),
    );
    return path;
  }

  /**
   * Evicts until `need` more bytes fit the budget: stale partial downloads first, then artifacts
   * by last use, never one in use or being downloaded. Evicts nothing when even that cannot fit.
   */
  private async makeRoom(need: number, downloading: string): Promise<void> {
    const inUse = this.options.inUse();
    const keep = (sha: string) => inUse.has(sha) || sha === downloading || this.downloads.has(sha);
    const disk = await this.usedOnDisk();
    const used = disk.total + this.reserved;
    if (used + need <= this.budgetBytes) return;
    const candidates: Array<{ sha256: string; size: number; path: string; partial: boolean }> = [
      ...disk.partials.filter((p) => !keep(p.sha256)).map((p) => ({ ...p, partial: true })),
      ...[...this.entries.values()]
        .filter((e) => !keep(e.sha256))
        .sort((a, b) => a.lastUsedAt - b.lastUsedAt)
        .map((e) => ({
          sha256: e.sha256,
          size: e.size,
          path: this.pathOf(e.sha256, e.format),
          partial: false,
        })),
    ];
    const freeable = candidates.reduce((sum, c) => sum + c.size, 0);
    if (used - freeable + need > this.budgetBytes) {
      throw new ArtifactError(
        "DISK_BUDGET_EXCEEDED",
        `${need} more bytes do not fit the cache budget of ${this.budgetBytes} bytes: ${used} are used, ` +
          `${used - freeable} of them by artifacts in use or being downloaded (raise --cache-budget)`,
      );
    }
    let freed = 0;
    for (const candidate of candidates) {
      if (used - freed + need <= this.budgetBytes) break;
      await unlink(candidate.path).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "ENOENT") throw err;
      });
      freed += candidate.size;
      const model = candidate.partial ? undefined : this.entries.get(candidate.sha256)?.model;
      if (!candidate.partial) this.entries.delete(candidate.sha256);
      this.log.info("artifact evicted from the cache", {
        sha256: candidate.sha256,
        size: candidate.size,
        partial: candidate.partial,
        ...(model ? { model } : {}),
      });
    }
    await this.persist();
  }

  private async usedOnDisk(): Promise<{
    total: number;
    partials: Array<{ sha256: string; size: number; path: string }>;
  }> {
    const partials: Array<{ sha256: string; size: number; path: string }> = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const sha256 = PARTIAL_FILE.exec(name)?.[1];
      if (!sha256) continue;
      const path = join(this.dir, name);
      const size = await fileSize(path);
      if (size !== undefined) partials.push({ sha256, size, path });
    }
    let total = partials.reduce((sum, p) => sum + p.size, 0);
    for (const entry of this.entries.values()) total += entry.size;
    return { total, partials };
  }

  /** Reads the index once and reconciles it with the files: gone ones are dropped, strays adopted. */
  private open(): Promise<void> {
    this.opened ??= (async () => {
      await mkdir(this.dir, { recursive: true });
      const text = await readFile(join(this.dir, INDEX_FILE), "utf8").catch(() => undefined);
      let listed: IndexEntry[] = [];
      if (text !== undefined) {
        try {
          listed = IndexFile.parse(JSON.parse(text)).artifacts;
        } catch (err) {
          this.log.warn("artifact cache index unreadable; rebuilding it from the files", {
            dir: this.dir,
            error: errorMessage(err),
          });
        }
      }
      for (const entry of listed) {
        if ((await fileSize(this.pathOf(entry.sha256, entry.format))) === entry.size) {
          this.entries.set(entry.sha256, entry);
        }
      }
      // Only verified files are ever renamed to <sha256>.<ext>: one missing from the index was
      // renamed just before a crash. Adopted as least recently used, with no model to report.
      for (const name of await readdir(this.dir)) {
        const match = ARTIFACT_FILE.exec(name);
        if (!match || this.entries.has(match[1] as string)) continue;
        const size = await fileSize(join(this.dir, name));
        if (size === undefined) continue;
        const format = match[2] === "gguf" ? "gguf" : "mlx-tar";
        this.entries.set(match[1] as string, { sha256: match[1] as string, size, format, lastUsedAt: 0 });
      }
      await this.persist();
    })();
    return this.opened;
  }

  private async record(entry: IndexEntry): Promise<void> {
    this.entries.set(entry.sha256, entry);
    await this.persist();
  }

  private async persist(): Promise<void> {
    const path = join(this.dir, INDEX_FILE);
    const tmp = `${path}.${process.pid}.tmp`;
    const body = { version: 1, artifacts: [...this.entries.values()] };
    await writeFile(tmp, `${JSON.stringify(body, null, 1)}\n`);
    await rename(tmp, path);
  }

  private serially<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task, task);
    this.queue = run.catch(() => {});
    return run;
  }
}

async function fileSize(path: string): Promise<number | undefined> {
  const info = await stat(path).catch(() => undefined);
  return info?.isFile() ? info.size : undefined;
}
