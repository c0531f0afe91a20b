// Runs the gateway Worker locally in workerd (wrangler's unstable_startWorker: no inspector, no
// file watching), with local D1 migrated first. Used by `npm start`, the e2e tests and the bench.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import { unstable_startWorker } from "wrangler";
import { REPO_ROOT } from "./paths.ts";

export { REPO_ROOT };

/** Offline settings for wrangler: no telemetry, no request.cf fetch. */
export const WRANGLER_OFFLINE_ENV = {
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
} as const;
Object.assign(process.env, WRANGLER_OFFLINE_ENV);

export interface LocalGatewayOptions {
  /** Where local D1 and Durable Object state live (wrangler's --persist-to). */
  persistDir: string;
  secret: string;
  port?: number;
  hostname?: string;
  /** Extra or overriding Worker vars (strings), e.g. { QUEUE_MAX: "4" }. */
  vars?: Record<string, string>;
  logLevel?: "none" | "error" | "warn" | "info" | "log" | "debug";
}

export interface LocalGateway {
  url: URL;
  /** Base URL without a trailing slash, e.g. http://127.0.0.1:8787 */
  origin: string;
  dispose(): Promise<void>;
}

export async function applyLocalMigrations(persistDir: string): Promise<void> {
  const wrangler = resolve(REPO_ROOT, "node_modules/wrangler/bin/wrangler.js");
  const args = [wrangler, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistDir];
  await new Promise<void>((done, fail) => {
    const child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...WRANGLER_OFFLINE_ENV, CI: "true" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => {
      output += d;
    });
    child.stderr.on("data", (d) => {
      output += d;
    });
    child.on("error", fail);
    child.on("exit", (code) =>
      code === 0 ? done() : fail(new Error(`D1 migrations failed (exit ${code}):\n${output.slice(-2000)}`)),
    );
  });
}

export async function startLocalGateway(o: LocalGatewayOptions): Promise<LocalGateway> {
  await applyLocalMigrations(o.persistDir);
  const bindings: Record<string, { type: "plain_text" | "secret_text"; value: string }> = {
    JWT_SECRET: { type: "secret_text", value: o.secret },
  };
  for (const [k, v] of Object.entries(o.vars ?? {})) bindings[k] = { type: "plain_text", value: v };
  const worker = await unstable_startWorker({
    config: resolve(REPO_ROOT, "wrangler.toml"),
    bindings,
    envFiles: [],
    dev: {
      inspector: false,
      watch: false,
      liveReload: false,
      persist: o.persistDir,
      logLevel: o.logLevel ?? "warn",
      server: { hostname: o.hostname ?? "127.0.0.1", port: o.port ?? 0 },
    },
  });
  await worker.ready;
  const url = await worker.url;
  return { url, origin: url.origin, dispose: () => worker.dispose() };
}
