// Prototype optimizations on COPIES of the gateway (never the tree itself): each variant copies
// gateway/, schema/ and wrangler.toml to a temp dir, applies text patches, and runs there, so its
// gain is measured side by side with the unmodified Worker. A patch whose anchor text is gone (the
// code changed since it was written) skips the variant rather than measuring something else.
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";

export interface Patch {
  file: string;
  find: string;
  replace: string;
}

export interface VariantSpec {
  name: string;
  /** The change the lead would make, in one line. */
  change: string;
  patches: Patch[];
}

export interface PreparedVariant {
  spec: VariantSpec;
  dir: string;
  configPath: string;
  /**
   * The newest agent protocol this gateway copy speaks, when older than this checkout's agent's
   * (a ref from before protocol v2 refuses a v2 hello): the bench agent then says hello with it.
   */
  protocol?: number;
  dispose(): void;
}

export function prepareVariant(spec: VariantSpec): PreparedVariant | { spec: VariantSpec; skipped: string } {
  const dir = mkdtempSync(join(tmpdir(), `orchard-variant-${spec.name}-`));
  for (const part of GATEWAY_PARTS) {
    cpSync(resolve(REPO_ROOT, part), join(dir, part), { recursive: true });
  }
  symlinkSync(resolve(REPO_ROOT, "node_modules"), join(dir, "node_modules"));
  for (const p of spec.patches) {
    const path = join(dir, p.file);
    const text = readFileSync(path, "utf8");
    if (!text.includes(p.find)) {
      rmSync(dir, { recursive: true, force: true });
      return { spec, skipped: `anchor not found in ${p.file} (the code changed)` };
    }
    writeFileSync(path, text.replace(p.find, p.replace));
  }
  return {
    spec,
    dir,
    configPath: join(dir, "wrangler.toml"),
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** What a gateway copy is made of: the Worker, the contracts, its config and package.json. */
const GATEWAY_PARTS = ["gateway", "schema", "wrangler.toml", "package.json"];

/**
 * The gateway as it was at a git commit, to measure a change before/after side by side in one run
 * (`npm run bench -- --against <ref>`). The copy shares this checkout's node_modules.
 */
export function prepareFromRef(ref: string): PreparedVariant {
  let commit: string;
  try {
    commit = execFileSync("git", ["-C", REPO_ROOT, "rev-parse", "--verify", "--short", `${ref}^{commit}`], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
  } catch {
    throw new Error(`--against: "${ref}" is not a commit of this repository`);
  }
  const dir = mkdtempSync(join(tmpdir(), `orchard-ref-${commit}-`));
  const tar = execFileSync("git", ["-C", REPO_ROOT, "archive", "--format=tar", commit, ...GATEWAY_PARTS], {
    maxBuffer: 256 * 1024 * 1024,
  });
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  symlinkSync(resolve(REPO_ROOT, "node_modules"), join(dir, "node_modules"));
  const protocol = /export const PROTOCOL_VERSION = (\d+);/.exec(
    readFileSync(join(dir, "schema/protocol.ts"), "utf8"),
  )?.[1];
  return {
    spec: { name: `at ${commit}`, change: `the gateway at ${ref} (${commit})`, patches: [] },
    dir,
    configPath: join(dir, "wrangler.toml"),
    ...(protocol === undefined ? {} : { protocol: Number(protocol) }),
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The optimizations the hot-spot list proposes, as patches. */
export const VARIANTS: VariantSpec[] = [
  // jwt-key-cache was applied to gateway/middleware/auth (imported CryptoKey cached per secret).
  {
    name: "socket-agent-cache",
    change:
      "hub: map WebSocket → AgentConnection in memory instead of deserializeAttachment() on every frame",
    patches: [
      {
        file: "gateway/hub/agent-hub.ts",
        find: `  #agentFor(ws: WebSocket): AgentConnection | null {
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment === null) return null;
    const agent = this.#agents.get(attachment.agentId);
    return agent !== undefined && agent.sessionId === attachment.sessionId ? agent : null;
  }`,
        replace: `  readonly #bySocket = new WeakMap<WebSocket, AgentConnection>();
  #agentFor(ws: WebSocket): AgentConnection | null {
    const cached = this.#bySocket.get(ws);
    if (cached !== undefined && this.#agents.get(cached.id) === cached) return cached;
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment === null) return null;
    const agent = this.#agents.get(attachment.agentId);
    const found = agent !== undefined && agent.sessionId === attachment.sessionId ? agent : null;
    if (found !== null) this.#bySocket.set(ws, found);
    return found;
  }`,
      },
    ],
  },
  // chunk-fast-path was applied to schema/protocol.ts (parseAgentFrame checks chunk frames by hand).
  // trust-hub-events and no-decoder-stream are gone with the NDJSON hop they patched: the hub now
  // renders the caller's SSE/JSON itself and the Worker passes the body through (inference/render.ts).
  {
    name: "no-access-log",
    change: "access log: skip the per-request line for successful inference (measures what the line costs)",
    patches: [
      {
        file: "gateway/middleware/access-log/index.ts",
        find: "    const status = c.res.status;\n",
        replace: "    const status = c.res.status;\n    if (status < 400) return;\n",
      },
    ],
  },
];

/** Every patch at once (the ones whose anchors are still there). */
export function combinedVariant(specs: VariantSpec[]): VariantSpec {
  return { name: "all", change: "all of the above together", patches: specs.flatMap((s) => s.patches) };
}
