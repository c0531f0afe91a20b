// The state file: what a running agent last knew of itself (connected or not and since when, the
// last disconnect and error, work in flight, its models), rewritten every interval and whenever the
// connection changes, so `orchard-agent status` can say more than "the process runs". Written
// atomically (temporary file, then rename); read back through the same zod schema.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { z } from "zod";
import { LOG_LEVELS, type LogLevel } from "../log.ts";

export const STATE_INTERVAL_MS = 15_000;

const Event = z.object({ at: z.string(), message: z.string() });

export const AgentState = z.object({
  pid: z.number().int(),
  agentId: z.string(),
  gateway: z.string(),
  startedAt: z.string(),
  updatedAt: z.string(),
  /** How often the agent rewrites the file: an updatedAt much older means it stopped doing so. */
  intervalMs: z.number().int().positive(),
  connection: z.enum(["connecting", "connected", "disconnected", "stopped"]),
  connectedAt: z.string().optional(),
  lastDisconnect: Event.extend({ code: z.number().int().optional() }).optional(),
  lastError: Event.optional(),
  inFlight: z.number().int().nonnegative(),
  draining: z.boolean(),
  generationsFinished: z.number().int().nonnegative(),
  models: z.array(z.object({ name: z.string(), engine: z.string(), loaded: z.boolean() })),
  /** Set by the last write before the process ends. */
  exit: z.object({ code: z.number().int(), reason: z.string(), at: z.string() }).optional(),
});
export type AgentState = z.infer<typeof AgentState>;

/** What the agent is doing now, read at each write. */
export interface AgentSample {
  inFlight: number;
  draining: boolean;
  generationsFinished: number;
  models: AgentState["models"];
}

export interface AgentStateWriterOptions {
  path: string;
  agentId: string;
  gateway: string;
  sample: () => Promise<AgentSample>;
  intervalMs?: number;
  now?: () => Date;
  pid?: number;
}

export class AgentStateWriter {
  private state: AgentState;
  private timer: NodeJS.Timeout | undefined;
  /** One write at a time; a change during a write asks for one more after it. */
  private writing: Promise<void> | undefined;
  private again = false;
  private readonly now: () => Date;

  constructor(private readonly options: AgentStateWriterOptions) {
    this.now = options.now ?? (() => new Date());
    const at = this.now().toISOString();
    this.state = {
      pid: options.pid ?? process.pid,
      agentId: options.agentId,
      gateway: options.gateway,
      startedAt: at,
      updatedAt: at,
      intervalMs: options.intervalMs ?? STATE_INTERVAL_MS,
      connection: "connecting",
      inFlight: 0,
      draining: false,
      generationsFinished: 0,
      models: [],
    };
  }

  /** The last state written (or about to be). */
  get current(): AgentState {
    return this.state;
  }

  /**
   * Reads one of the agent's log records (a parsed JSON line) for connection changes: `connected`
   * (which the CLI documents), `disconnected`, and any error. A change is written at once.
   */
  observe(record: Record<string, unknown>): void {
    const at = typeof record.time === "string" ? record.time : this.now().toISOString();
    const message = typeof record.msg === "string" ? record.msg : "";
    if (message === "connected") {
      this.state = { ...this.state, connection: "connected", connectedAt: at };
    } else if (message === "disconnected") {
      const { connectedAt: _, ...rest } = this.state;
      const code = typeof record.code === "number" ? { code: record.code } : {};
      const reason = typeof record.reason === "string" && record.reason ? `: ${record.reason}` : "";
      this.state = {
        ...rest,
        connection: "disconnected",
        lastDisconnect: { at, message: `disconnected${reason}`, ...code },
      };
    } else if (record.level === "error") {
      this.state = { ...this.state, lastError: { at, message } };
    } else {
      return;
    }
    void this.write();
  }

  start(): void {
    void this.write();
    this.timer = setInterval(() => void this.write(), this.state.intervalMs);
    this.timer.unref();
  }

  /** The last write: the exit code and why. */
  async stop(exit: { code: number; reason: string }): Promise<void> {
    clearInterval(this.timer);
    this.state = {
      ...this.state,
      connection: "stopped",
      exit: { ...exit, at: this.now().toISOString() },
    };
    await this.write();
  }

  write(): Promise<void> {
    if (this.writing) {
      this.again = true;
      return this.writing;
    }
    this.writing = (async () => {
      do {
        this.again = false;
        const sample = await this.options.sample().catch(() => undefined);
        this.state = { ...this.state, ...sample, updatedAt: this.now().toISOString() };
        writeStateFile(this.options.path, this.state);
      } while (this.again);
    })().finally(() => {
      this.writing = undefined;
    });
    return this.writing;
  }
}

function writeStateFile(path: string, state: AgentState): void {
  const temp = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    renameSync(temp, path);
  } catch {
    // A full disk or a removed folder must not take the agent down; status then shows a stale file.
  }
}

export type StateRead = { ok: true; state: AgentState } | { ok: false; reason: string };

export function readStateFile(path: string): StateRead {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      ok: false,
      reason: code === "ENOENT" ? `no state file yet (${path})` : `cannot read ${path} (${code})`,
    };
  }
  try {
    const parsed = AgentState.safeParse(JSON.parse(text));
    if (parsed.success) return { ok: true, state: parsed.data };
  } catch {
    // not JSON: the same answer as a wrong shape
  }
  return { ok: false, reason: `${path} is not an agent state file` };
}

/** Whether a log line of `level` passes `threshold` (the order of LOG_LEVELS). */
export function passes(level: unknown, threshold: LogLevel): boolean {
  const rank = LOG_LEVELS.indexOf(level as LogLevel);
  return rank >= 0 && rank >= LOG_LEVELS.indexOf(threshold);
}
