// The agent's own log file, rotated by size: launchd writes a job's output to a file but never
// rotates it, and newsyslog's configuration needs root, which a user agent does not have. Lines are
// written whole and synchronously (the agent logs a few lines per request, not per token), so a
// crash loses nothing already logged and no line is ever split between two files.
import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/** Rotate when the next line would take the file past this; at most (keep + 1) x this on disk. */
export const LOG_MAX_BYTES = 10 * 1024 * 1024;
/** Rotated files kept beside the current one: agent.log.1 (newest) to agent.log.4. */
export const LOG_KEEP = 4;

export interface RotatingLogOptions {
  maxBytes?: number;
  keep?: number;
}

export class RotatingLogFile {
  private fd: number;
  private size: number;
  private readonly maxBytes: number;
  private readonly keep: number;

  constructor(
    readonly path: string,
    { maxBytes = LOG_MAX_BYTES, keep = LOG_KEEP }: RotatingLogOptions = {},
  ) {
    if (!(maxBytes > 0) || !Number.isInteger(keep) || keep < 1) {
      throw new RangeError("maxBytes must be positive and keep a whole number of at least 1");
    }
    this.maxBytes = maxBytes;
    this.keep = keep;
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, "a", 0o600);
    this.size = fstatSync(this.fd).size;
  }

  /** Appends `line` and a newline, rotating first when they would not fit (a longer line gets a file to itself). */
  writeLine(line: string): void {
    const text = `${line}\n`;
    const bytes = Buffer.byteLength(text);
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    writeSync(this.fd, text);
    this.size += bytes;
  }

  close(): void {
    closeSync(this.fd);
  }

  private rotate(): void {
    closeSync(this.fd);
    rmSync(`${this.path}.${this.keep}`, { force: true });
    for (let n = this.keep - 1; n >= 1; n--) {
      try {
        renameSync(`${this.path}.${n}`, `${this.path}.${n + 1}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    renameSync(this.path, `${this.path}.1`);
    this.fd = openSync(this.path, "a", 0o600);
    this.size = 0;
  }
}
