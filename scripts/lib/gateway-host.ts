// Child-process entry for `npm start`'s gateway: runs the Worker in workerd (startLocalGateway)
// in a process group of its own, so npm start can always end workerd by ending this group, and
// so this process ends workerd when npm start is gone, even after a SIGKILL: the IPC channel
// closes, and a closed channel means nobody is left to stop the gateway.
//
// IPC in: {type:"start", options} once, {type:"stop"}. IPC out: {type:"ready", origin} or
// {type:"failed", message}. Spawned by gateway-process.ts. A signal sent straight to this process
// meets wrangler's own SIGINT/SIGTERM handler (process.exit), and Miniflare's exit hook kills
// workerd; npm start sees the exit and stops the rest.
import type { GatewayHostReport, GatewayHostRequest } from "./gateway-process.ts";
import { type LocalGateway, type LocalGatewayOptions, startLocalGateway } from "./local-gateway.ts";

/** Past this, the Worker is left to Miniflare's exit hook, which kills workerd when we exit. */
const DISPOSE_TIMEOUT_MS = 10_000;

let starting: Promise<LocalGateway | undefined> | undefined;
let stopping = false;

function report(message: GatewayHostReport): void {
  if (process.connected) process.send?.(message);
}

function start(options: LocalGatewayOptions): void {
  starting = startLocalGateway(options).then(
    (gateway) => {
      report({ type: "ready", origin: gateway.origin });
      return gateway;
    },
    (err: unknown) => {
      report({ type: "failed", message: (err as Error).message });
      return undefined;
    },
  );
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(1), DISPOSE_TIMEOUT_MS).unref();
  const gateway = await starting;
  await gateway?.dispose().catch(() => {});
  process.exit(0);
}

process.on("message", (message: GatewayHostRequest) => {
  if (message.type === "start" && starting === undefined) start(message.options);
  else if (message.type === "stop") void stop();
});
process.on("disconnect", () => void stop());
