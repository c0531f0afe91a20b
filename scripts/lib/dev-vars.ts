// Reads and creates the git-ignored .dev.vars that holds the local JWT secret.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

export function parseDevVars(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!m || line.trimStart().startsWith("#")) continue;
    let value = m[2] ?? "";
    if (/^(["']).*\1$/.test(value)) value = value.slice(1, -1);
    vars[m[1] as string] = value;
  }
  return vars;
}

/** Returns the local JWT secret, creating .dev.vars with a fresh random one on first use. */
export function ensureDevSecret(path = ".dev.vars"): { secret: string; created: boolean } {
  const existing = existsSync(path) ? parseDevVars(readFileSync(path, "utf8")) : {};
  if (existing.JWT_SECRET && existing.JWT_SECRET.length >= 32)
    return { secret: existing.JWT_SECRET, created: false };
  const secret = randomBytes(32).toString("hex");
  const kept = existsSync(path)
    ? readFileSync(path, "utf8")
        .split(/\r?\n/)
        .filter((l) => l.trim() !== "" && !/^\s*JWT_SECRET\s*=/.test(l))
    : ["# Local secrets for `npm start` (git-ignored). Rotate by deleting this file."];
  writeFileSync(path, `${[...kept, `JWT_SECRET=${secret}`].join("\n")}\n`, { mode: 0o600 });
  return { secret, created: true };
}
