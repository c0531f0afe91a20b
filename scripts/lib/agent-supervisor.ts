// Keeps `npm start`'s one node agent running: restarts it with exponential backoff when it exits
// on its own, gives up on the exit codes a restart cannot fix (bad configuration, refused), and
// drains it when npm start stops. The gateway keeps serving while the agent is down.
import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ExitCode } from "../../node-agent/connection.ts";
import { REPO_ROOT } from "./paths.ts";
import { describeExit, type Exit, killGroup, waitForExit } from "./process-group.ts";

export const RESTART_BACKOFF = {
  baseMs: 1_000,
  maxMs: 30_000,
  /** A run at least this long counts as healthy: the next crash starts the backoff over. */
  resetAfterMs: 60_000,
};

/** Time past the agent's drain deadline before npm start kills it. */
const DRAIN_GRACE_MS = 5_000;

export type AgentExitDecision = { action: "restart" } | { action: "give-up"; exitCode: number; why: string };

/** What to do when the agent exited without npm start asking it to. */
export function decideOnAgentExit(exit: Exit): AgentExitDecision {
  switch (exit.code) {
    case ExitCode.CONFIG: // the same flags and files would be refused again
      return {
        action: "give-up",
        exitCode: ExitCode.CONFIG,
        why: "the agent's configuration is invalid (exit 2, its message is above); restarting it would fail the same way. Fix the setting and run npm start again.",
      };
    case ExitCode.UNAUTHORIZED: // the token or the agent's row would be refused again
      return {
        action: "give-up",
        exitCode: ExitCode.UNAUTHORIZED,
        why: "the gateway refused the agent's token or the agent is revoked (exit 3, see its log above); a restarted agent would be refused the same way.",
      };
    case ExitCode.REFUSED: // an incompatible protocol stays incompatible; a newer connection holds the id
      return {
        action: "give-up",
        exitCode: ExitCode.REFUSED,
        why: "the hub refused the agent for good (exit 4: incompatible protocol version, or another agent connected with the same id; see its log above); a restart would be refused the same way.",
      };
    default:
      // A crash, a signal, or a drain (exit 0) that npm start did not ask for: npm start keeps one
      // agent serving for as long as it runs, so an agent stopped from outside comes back too.
      return { action: "restart" };
  }
}

/** The delay before restart number `n` (1-based) of a run of quick crashes: 1 s, 2 s, 4 s ... 30 s. */
export function restartDelayMs(n: number): number {
  return Math.min(RESTART_BACKOFF.maxMs, RESTART_BACKOFF.baseMs * 2 ** (n - 1));
}

export interface AgentSupervisorOptions {
  /** Arguments to `node-agent/main.ts start`. */
  args: string[];
  env: NodeJS.ProcessEnv;
  /** The agent's drain deadline: how long a stop may wait before the agent is killed. */
  drainTimeoutMs: number;
  /** One line for npm start's output. */
  say: (line: string) => void;
  /** The agent exited in a way restarting cannot fix (or before it was ever ready). */
  onGiveUp: (exitCode: number) => void;
}

export class AgentSupervisor {
  private child: ChildProcess | undefined;
  private startedAt = 0;
  private quickCrashes = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Until npm start has seen an agent ready, a failing agent (exit 1) means it cannot come up. */
  private wasReady = false;

  constructor(private readonly options: AgentSupervisorOptions) {}

  start(): void {
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "--import",
        pathToFileURL(resolve(REPO_ROOT, "scripts/lib/agent-leash.ts")).href,
        resolve(REPO_ROOT, "node-agent/main.ts"),
        "start",
        ...this.options.args,
      ],
      {
        cwd: REPO_ROOT,
        env: {
          ...this.options.env,
          ORCHARD_LEASH_PARENT_PID: String(process.pid),
          ORCHARD_LEASH_GRACE_MS: String(this.options.drainTimeoutMs + DRAIN_GRACE_MS),
        },
        // stdin is the leash (agent-leash.ts); it closes when npm start is gone.
        stdio: ["pipe", "inherit", "inherit"],
        // Its own group: Ctrl-C in a terminal reaches npm start only, which drains the agent first.
        detached: true,
      },
    );
    this.child = child;
    this.startedAt = Date.now();
    void waitForExit(child).then((exit) => this.exited(child, exit));
  }

  /** npm start is up: from now on an agent that fails (exit 1) is restarted too. */
  markReady(): void {
    this.wasReady = true;
  }

  /** Drains the agent (SIGTERM); kills its group if the drain outlasts its deadline. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => {
      this.options.say("start: the agent did not finish draining in time; killing it.");
      killGroup(child, "SIGKILL");
    }, this.options.drainTimeoutMs + DRAIN_GRACE_MS);
    await waitForExit(child);
    clearTimeout(timer);
  }

  /** Kills the agent's group at once, without a drain. */
  kill(): void {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    if (this.child) killGroup(this.child, "SIGKILL");
  }

  private exited(child: ChildProcess, exit: Exit): void {
    // Whatever it left behind in its group (tsx's esbuild service) goes with it.
    killGroup(child, "SIGKILL");
    if (this.stopped || child !== this.child) return;
    const ranMs = Date.now() - this.startedAt;
    const what = `the agent exited (${describeExit(exit)}${exit.code === ExitCode.OK ? ": it drained, but npm start did not ask it to" : ""})`;
    const decision = decideOnAgentExit(exit);
    if (decision.action === "give-up") {
      this.options.say(`start: ${decision.why}`);
      this.options.onGiveUp(decision.exitCode);
      return;
    }
    if (!this.wasReady && exit.code === ExitCode.FAILURE) {
      // It failed on its way up (most often the engine or the model did not load): restarting
      // would print the same failure every 30 s while npm start never comes up.
      this.options.say(`start: ${what} before it was ready (see its log above).`);
      this.options.onGiveUp(ExitCode.FAILURE);
      return;
    }
    this.quickCrashes = ranMs >= RESTART_BACKOFF.resetAfterMs ? 1 : this.quickCrashes + 1;
    const delayMs = restartDelayMs(this.quickCrashes);
    this.options.say(
      `start: ${what} after ${Math.round(ranMs / 1000)}s; restarting it in ${delayMs / 1000}s (the gateway keeps serving).`,
    );
    this.restartTimer = setTimeout(() => {
      if (this.stopped) return;
      this.start();
      this.options.say(`start: agent restarted (pid ${this.child?.pid}).`);
    }, delayMs);
  }
}
