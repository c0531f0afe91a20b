// The agent token kept in a file only its owner can read (0600), so a service definition (a launchd
// plist, a systemd unit) names the file and never holds the token itself. `install` writes it;
// `start --token-file` reads it, refusing a file others could read, as ssh does with its keys.
import {
  closeSync,
  fchmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";

/** Thrown with a message that says what to change; config.ts names the setting it came from. */
export class TokenFileError extends Error {
  readonly code = "ERR_AGENT_TOKEN_FILE";
  override readonly name = "TokenFileError";
}

/** The token in `path`, trimmed; throws TokenFileError for a missing, empty or group/world-readable file. */
export function readTokenFile(path: string, platform: NodeJS.Platform = process.platform): string {
  let mode: number;
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new TokenFileError(`${path} is not a file`);
    mode = stat.mode;
  } catch (err) {
    if (err instanceof TokenFileError) throw err;
    throw new TokenFileError(`cannot read ${path} (${(err as { code?: string }).code ?? "error"})`);
  }
  // Windows has no POSIX modes to check; everywhere else a token others can read is refused.
  if (platform !== "win32" && (mode & 0o077) !== 0) {
    const octal = (mode & 0o777).toString(8).padStart(4, "0");
    throw new TokenFileError(`${path} can be read by other users (mode ${octal}); run: chmod 600 ${path}`);
  }
  const token = readFileSync(path, "utf8").trim();
  if (token === "") throw new TokenFileError(`${path} is empty`);
  return token;
}

/**
 * Writes `token` to `path` with mode 0600 (its folder 0700, created if missing), atomically: a
 * reader sees the old token or the new one, never a half-written file or a moment of wider mode.
 */
export function writeTokenFile(path: string, token: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  const fd = openSync(temp, "w", 0o600);
  try {
    // open() keeps the mode of a file left over from an interrupted run: narrow it before writing.
    fchmodSync(fd, 0o600);
    writeSync(fd, `${token}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temp, path);
}
