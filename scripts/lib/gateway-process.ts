// `npm start`'s gateway as a child process (gateway-host.ts) in its own process group: started
// and stopped over IPC, killed as a group (workerd included) when it does not stop in time. This
// module does not load wrangler, so npm start's own signal handling stays its own.
import { spawn } from "node:child_process";
import { resolve } from "node:path";
import type { LocalGatewayOptions } from "./local-gateway.ts";
import { REPO_ROOT } from "./paths.ts";
import { describeExit, type Exit, killGroup, waitForExit } from "./process-group.ts";

export type GatewayHostRequest = { type: "start"; options: LocalGatewayOptions } | { type: "stop" };
export type GatewayHostReport = { type: "ready"; origin: string } | { type: "failed"; message: string };

/** How long the host may take to dispose the Worker before its group is killed. */
const STOP_TIMEOUT_MS = 15_000;

export interface GatewayProcess {
  /** The gateway's origin once it serves; rejects with a GatewayStartError. */
  ready: Promise<string>;
  /** The host process has exited, for whatever reason. */
  exited: Promise<Exit>;
  /** Disposes the Worker (waiting for a start under way); kills the group past STOP_TIMEOUT_MS. */
  stop(): Promise<void>;
  /** Kills the host and workerd at once. */
  kill(): void;
}

export class GatewayStartError extends Error {
  override readonly name = "GatewayStartError";
}

export function spawnGateway(options: LocalGatewayOptions): GatewayProcess {
  const host = spawn(
    process.execPath,
    ["--import", "tsx", resolve(REPO_ROOT, "scripts/lib/gateway-host.ts")],
    {
      cwd: REPO_ROOT,
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // Its own group: Ctrl-C in a terminal reaches npm start only, which stops the gateway last,
      // after the agent has drained through it.
      detached: true,
    },
  );
  const exited = waitForExit(host).then((exit) => {
    // workerd is in the host's group; a host that died without disposing it leaves it there.
    killGroup(host, "SIGKILL");
    return exit;
  });
  const ready = new Promise<string>((done, fail) => {
    host.on("message", (message: GatewayHostReport) => {
      if (message.type === "ready") done(message.origin);
      else fail(new GatewayStartError(message.message));
    });
    host.on("error", (err) =>
      fail(new GatewayStartError(`the gateway process did not start: ${err.message}`)),
    );
    void exited.then((exit) =>
      fail(new GatewayStartError(`the gateway process exited (${describeExit(exit)})`)),
    );
  });
  // A stop during startup leaves nobody waiting for `ready`; its rejection is expected then.
  ready.catch(() => {});
  host.send({ type: "start", options } satisfies GatewayHostRequest);

  return {
    ready,
    exited,
    async stop() {
      if (host.connected) host.send({ type: "stop" } satisfies GatewayHostRequest);
      const timer = setTimeout(() => killGroup(host, "SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    },
    kill: () => killGroup(host, "SIGKILL"),
  };
}
