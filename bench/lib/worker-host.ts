// Child-process entry that runs one Worker in workerd the way scripts/lib/local-gateway.ts does
// (wrangler's dev environment, inspector off unless profiling), in its own process so wrangler's
// Node side never shares an event loop with the load generator. It reports both the dev proxy's
// URL and the user Worker's own URL: the bench talks to the latter, since the proxy Worker is a
// wrangler dev artefact that production does not have.
//
// argv[2]: JSON WorkerHostConfig. IPC out: {type:"ready", ...WorkerEndpoints} or {type:"failed"}.
// IPC in: {type:"stop"}.
import { resolve } from "node:path";
import { unstable_DevEnv } from "wrangler";
import { applyLocalMigrations, REPO_ROOT, WRANGLER_OFFLINE_ENV } from "../../scripts/lib/local-gateway.ts";
import { childrenOf, commandName, listeningPorts } from "./procs.ts";

export interface WorkerHostConfig {
  /** wrangler.toml of the Worker. */
  config: string;
  persistDir: string;
  /** Secret bindings (e.g. JWT_SECRET). */
  secrets?: Record<string, string>;
  /** Plain-text vars overriding wrangler.toml's. */
  vars?: Record<string, string>;
  /** Apply D1 migrations first (the gateway has D1; the relay does not). */
  migrate?: boolean;
  /** Open workerd's inspector (profiling runs only: it slows the Worker down). */
  inspector?: boolean;
}

export interface WorkerEndpoints {
  /** The user Worker's own socket in its workerd process. */
  directOrigin: string;
  /** wrangler's dev proxy in front of it (what startLocalGateway returns). */
  proxyOrigin: string;
  /** ws://… inspector of the user Worker (inspector runs only). */
  inspectorUrl?: string;
  /** The workerd process running the user Worker, and the one running wrangler's proxy. */
  userWorkerdPid: number;
  proxyWorkerdPid?: number;
}

async function main(): Promise<void> {
  Object.assign(process.env, WRANGLER_OFFLINE_ENV);
  const cfg = JSON.parse(process.argv[2] as string) as WorkerHostConfig;
  if (cfg.migrate) await applyLocalMigrations(cfg.persistDir);

  const bindings: Record<string, { type: "plain_text" | "secret_text"; value: string }> = {};
  for (const [k, v] of Object.entries(cfg.secrets ?? {})) bindings[k] = { type: "secret_text", value: v };
  for (const [k, v] of Object.entries(cfg.vars ?? {})) bindings[k] = { type: "plain_text", value: v };

  const devEnv = new unstable_DevEnv();
  // The user Worker's address is only announced on the controller bus, so listen there.
  type ProxyData = Extract<Parameters<typeof devEnv.dispatch>[0], { type: "reloadComplete" }>["proxyData"];
  let announced!: (data: ProxyData) => void;
  const reloaded = new Promise<ProxyData>((r) => {
    announced = r;
  });
  const dispatch = devEnv.dispatch.bind(devEnv);
  devEnv.dispatch = (event) => {
    if (event.type === "reloadComplete") announced(event.proxyData);
    dispatch(event);
  };
  const worker = await devEnv.startWorker({
    config: resolve(REPO_ROOT, cfg.config),
    bindings,
    envFiles: [],
    dev: {
      inspector: cfg.inspector ? { port: 0 } : false,
      watch: false,
      liveReload: false,
      persist: cfg.persistDir,
      // BENCH_WORKER_LOG_LEVEL=info shows the Worker's own log lines when diagnosing a failure.
      logLevel: (process.env.BENCH_WORKER_LOG_LEVEL as "warn" | undefined) ?? "warn",
      server: { hostname: "127.0.0.1", port: 0 },
    },
  });
  await worker.ready;
  const proxyUrl = await worker.url;
  // The proxy is ready before the user Worker is; its address comes with the first reload.
  const proxyData = await Promise.race([
    reloaded,
    new Promise<never>((_, fail) =>
      setTimeout(() => fail(new Error("wrangler never announced the user Worker's address")), 120_000),
    ),
  ]);
  const direct = proxyData.userWorkerUrl;
  const directOrigin = `http://${direct.hostname}:${direct.port}`;

  // Two workerd children: the one listening on the user Worker's port runs it; the other, the proxy.
  const workerds = childrenOf(process.pid).filter((pid) => commandName(pid) === "workerd");
  const userWorkerdPid = workerds.find((pid) => listeningPorts(pid).includes(Number(direct.port)));
  if (userWorkerdPid === undefined) throw new Error(`no workerd child listens on ${direct.port}`);
  // workerd's own inspector takes one client, and wrangler's inspector proxy is it: go through that.
  const inspector = cfg.inspector ? await worker.inspectorUrl : undefined;
  const endpoints: WorkerEndpoints = {
    directOrigin,
    proxyOrigin: proxyUrl.origin,
    ...(inspector ? { inspectorUrl: `ws://${inspector.host}/ws` } : {}),
    userWorkerdPid,
    proxyWorkerdPid: workerds.find((pid) => pid !== userWorkerdPid),
  };
  process.send?.({ type: "ready", ...endpoints });

  const stop = async () => {
    await worker.dispose().catch(() => {});
    process.exit(0);
  };
  process.on("message", (m: { type?: string }) => {
    if (m?.type === "stop") void stop();
  });
  process.on("disconnect", () => void stop());
}

main().catch((err: unknown) => {
  process.send?.({ type: "failed", error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});
