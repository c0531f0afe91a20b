// What the peer rows run, all in front of ONE synthetic token source over HTTP
// (bench/lib/token-server.ts, OpenAI's and Ollama's APIs):
//   - the token source itself (no hop: the floor of the floor);
//   - a plain Node reverse proxy (token-server.ts in its "proxy" role): one more HTTP hop, no more;
//   - the Portkey AI gateway (@portkey-ai/gateway, its own Node process, `start-server.js
//     --headless`), as an OpenAI provider with a custom host (x-portkey-provider: openai,
//     x-portkey-custom-host: the token source's /v1 — localhost is on its default trusted list);
//   - Orchard (the bench's gateway Worker with every feature on), whose agent (bench/agent.ts with
//     node-agent's real OllamaEngine) gets its tokens from the token source's Ollama API.
// Every peer gets the same OpenAI request, POST /v1/chat/completions.
import { type ChildProcess, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { REPO_ROOT } from "../../scripts/lib/local-gateway.ts";
import { type BenchChild, spawnTs } from "./children.ts";
import { END_USERS } from "./context.ts";
import type { HttpRequestSpec } from "./http-client.ts";
import { routeThroughRegistry } from "./registry-routing.ts";
import { type RunningAgent, type RunningWorker, startAgent } from "./stack.ts";
import { HTTP_SOURCE_MODEL } from "./token-server.ts";

export type PeerName = "source" | "proxy" | "portkey" | "orchard";

export interface Peer {
  name: PeerName;
  label: string;
  origin: string;
  /** Extra headers this peer needs (Portkey's provider, Orchard's bearer token). */
  headers: Record<string, string>;
  /** Processes whose CPU the peer's requests cost (besides the token source's). */
  pids: number[];
}

export interface Peers {
  peers: Peer[];
  /** Peers that could not start, with why (a result, not a crash). */
  failed: { name: PeerName; label: string; reason: string }[];
  sourcePid: number;
  stop(): Promise<void>;
}

export const PEER_LABEL: Record<PeerName, string> = {
  source: "token source direct (no hop)",
  proxy: "plain Node reverse proxy",
  portkey: "Portkey AI gateway",
  orchard: "Orchard /v1/chat/completions",
};

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
  return port;
}

/** The installed Portkey gateway's Node entry point, and its version. */
export function portkeyEntry(): { file: string; version: string } {
  const require = createRequire(join(REPO_ROOT, "package.json"));
  const pkgPath = require.resolve("@portkey-ai/gateway/package.json");
  const pkg = require(pkgPath) as { version: string; bin?: string | Record<string, string> };
  const bin = typeof pkg.bin === "string" ? pkg.bin : Object.values(pkg.bin ?? {})[0];
  return { file: resolve(dirname(pkgPath), bin ?? "build/start-server.js"), version: pkg.version };
}

/** Starts Portkey on a free port and waits until it answers; rejects with its output if it does not. */
async function startPortkey(): Promise<{ child: ChildProcess; origin: string; version: string }> {
  const { file, version } = portkeyEntry();
  const port = await freePort();
  const child = spawn(process.execPath, [file, `--port=${port}`, "--headless"], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_ENV: "production" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const origin = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`Portkey exited (${child.exitCode}): ${output.slice(-600)}`);
    const up = await fetch(`${origin}/`).then(
      () => true,
      () => false,
    );
    if (up) return { child, origin, version };
    if (Date.now() > deadline) {
      killGroup(child);
      throw new Error(`Portkey did not answer on ${origin} in 30 s: ${output.slice(-600)}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

/**
 * Starts the token source, the plain proxy, Portkey, and an Ollama-engine agent joined to
 * `orchard` (its model activated in the registry, as every bench model is).
 */
export async function startPeers(
  orchard: RunningWorker,
  secret: string,
  userToken: string,
  log: (line: string) => void,
): Promise<Peers> {
  const children: BenchChild[] = [];
  let portkey: ChildProcess | undefined;
  let agent: RunningAgent | undefined;
  const failed: Peers["failed"] = [];
  const stop = async () => {
    await agent?.stop();
    if (portkey) killGroup(portkey);
    await Promise.all(children.map((c) => c.stop(1_000)));
  };
  try {
    const source = spawnTs("token source", resolve(REPO_ROOT, "bench/lib/token-server.ts"));
    children.push(source);
    const { port } = await source.waitFor<{ port: number }>("ready");
    const sourceOrigin = `http://127.0.0.1:${port}`;
    const proxy = spawnTs("plain proxy", resolve(REPO_ROOT, "bench/lib/token-server.ts"), [
      "proxy",
      sourceOrigin,
    ]);
    children.push(proxy);
    const { port: proxyPort } = await proxy.waitFor<{ port: number }>("ready");
    const peers: Peer[] = [
      { name: "source", label: PEER_LABEL.source, origin: sourceOrigin, headers: {}, pids: [] },
      {
        name: "proxy",
        label: PEER_LABEL.proxy,
        origin: `http://127.0.0.1:${proxyPort}`,
        headers: {},
        pids: [proxy.pid],
      },
    ];
    try {
      const pk = await startPortkey();
      portkey = pk.child;
      peers.push({
        name: "portkey",
        label: `${PEER_LABEL.portkey} ${pk.version}`,
        origin: pk.origin,
        headers: {
          "x-portkey-provider": "openai",
          "x-portkey-custom-host": `${sourceOrigin}/v1`,
          authorization: "Bearer unused",
        },
        pids: [pk.child.pid as number],
      });
    } catch (err) {
      failed.push({ name: "portkey", label: PEER_LABEL.portkey, reason: String(err) });
      log(`  peers: Portkey did not start: ${String(err).slice(0, 200)}`);
    }
    agent = await startAgent(
      "bench-http-source",
      secret,
      {
        kind: "ollama",
        baseUrl: sourceOrigin,
        models: [{ name: HTTP_SOURCE_MODEL, tag: `${HTTP_SOURCE_MODEL}:latest` }],
      },
      { orchard, models: [HTTP_SOURCE_MODEL] },
    );
    const routing = await routeThroughRegistry(orchard.directOrigin, secret, [HTTP_SOURCE_MODEL]);
    log(`  peers: Orchard's agent serves ${HTTP_SOURCE_MODEL} from the token source (${routing})`);
    peers.push({
      name: "orchard",
      label: PEER_LABEL.orchard,
      origin: orchard.directOrigin,
      headers: { authorization: `Bearer ${userToken}` },
      pids: [orchard.userWorkerdPid, orchard.host.pid, agent.proc.pid],
    });
    return { peers, failed, sourcePid: source.pid, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The OpenAI request every peer is driven with (each simulated end user in turn, as elsewhere). */
export function peerRequest(peer: Peer, maxTokens: number, stream: boolean): HttpRequestSpec {
  const headers = { "content-type": "application/json", ...peer.headers };
  return {
    method: "POST",
    path: "/v1/chat/completions",
    headers,
    perRequestHeaders: Array.from({ length: END_USERS }, (_, i) => ({
      ...headers,
      "x-orchard-user": `bench-user-${i}`,
    })),
    body: JSON.stringify({
      model: HTTP_SOURCE_MODEL,
      messages: [{ role: "user", content: "bench" }],
      max_tokens: maxTokens,
      stream,
    }),
  };
}
