// Graceful leave: tell the hub `draining`, refuse new work, give in-flight generations the drain
// deadline, abort what is left (each answered with a retryable AGENT_DRAINING), then close with
// DRAINED, which the agent never reconnects after.
import { CloseCode } from "../schema/protocol.ts";
import { sendFrame } from "./agent-frames.ts";
import { type Connection, type ConnectionEnd, ExitCode, type Link } from "./connection.ts";
import { CANCEL_USAGE_GRACE_MS } from "./generation-runner.ts";
import type { InFlightTable } from "./in-flight.ts";
import type { Logger } from "./log.ts";

export interface DrainOptions {
  /** How long in-flight generations may keep running once draining started. */
  deadlineMs: number;
  table: InFlightTable;
  connection: Connection;
  /** The link the hub is told on; in-flight work only ever lives there (a closed link's is aborted). */
  currentLink: () => Link | undefined;
  log: Logger;
}

export class Drain {
  private leaving: Promise<ConnectionEnd> | undefined;
  private refusing = false;

  constructor(private readonly options: DrainOptions) {}

  /** From drain() or stop() on: new work is refused, and every later hello is followed by `draining`. */
  get active(): boolean {
    return this.refusing;
  }

  get deadlineMs(): number {
    return this.options.deadlineMs;
  }

  /** Refuses new work from now on, without waiting for anything (an immediate stop). */
  refuseWork(): void {
    this.refusing = true;
  }

  /** Starts the graceful leave once; every call resolves with the same end. */
  run(): Promise<ConnectionEnd> {
    this.leaving ??= this.leave();
    return this.leaving;
  }

  private async leave(): Promise<ConnectionEnd> {
    const { deadlineMs, table, connection, log } = this.options;
    this.refusing = true;
    log.info("draining", { inFlight: table.size, deadlineMs });
    const link = this.options.currentLink();
    if (link) sendFrame(link, { type: "draining", deadlineMs });
    if (!(await table.settled(deadlineMs))) {
      log.warn("drain deadline reached; aborting in-flight work", { inFlight: table.size });
      table.abortAll("drain");
      await table.settled(CANCEL_USAGE_GRACE_MS);
    }
    const end = await connection.stop(CloseCode.DRAINED, "drained", ExitCode.OK);
    log.info("drained", { exitCode: end.exitCode });
    return end;
  }
}
