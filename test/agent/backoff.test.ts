// Reconnect policy: full-jitter exponential backoff and the per-close-code decision.
import { describe, expect, it } from "vitest";
import { backoffDelay, decideOnClose, ExitCode } from "../../node-agent/connection.ts";
import { CloseCode, isTerminalCloseCode } from "../../schema/protocol.ts";

const opts = { baseMs: 500, maxMs: 30_000 };
const almostOne = () => 0.999_999_9;

describe("backoffDelay", () => {
  it("is zero when the jitter draws zero", () => {
    for (let attempt = 0; attempt < 10; attempt++) expect(backoffDelay(attempt, opts, () => 0)).toBe(0);
  });

  it("doubles its ceiling per attempt from the base", () => {
    const ceilings = [0, 1, 2, 3, 4].map((attempt) => backoffDelay(attempt, opts, almostOne) + 1);
    expect(ceilings).toEqual([500, 1000, 2000, 4000, 8000]);
  });

  it("never exceeds the cap, even for huge attempt counts", () => {
    for (const attempt of [6, 7, 10, 50, 1_000, Number.MAX_SAFE_INTEGER]) {
      const delay = backoffDelay(attempt, opts, almostOne);
      expect(delay).toBeLessThan(30_000);
      expect(delay).toBeGreaterThan(29_000);
    }
  });

  it("spreads delays uniformly over [0, ceiling)", () => {
    const draws = [0.1, 0.25, 0.5, 0.75, 0.9];
    expect(draws.map((r) => backoffDelay(2, opts, () => r))).toEqual([200, 500, 1000, 1500, 1800]);
  });

  it("treats a negative attempt as the first", () => {
    expect(backoffDelay(-3, opts, almostOne)).toBe(499);
  });
});

describe("decideOnClose", () => {
  it("stops for good on every terminal code, successfully only after DRAINED", () => {
    expect(decideOnClose(CloseCode.DRAINED)).toMatchObject({ action: "stop", exitCode: ExitCode.OK });
    expect(decideOnClose(CloseCode.UNAUTHORIZED)).toMatchObject({
      action: "stop",
      exitCode: ExitCode.UNAUTHORIZED,
    });
    expect(decideOnClose(CloseCode.REVOKED)).toMatchObject({
      action: "stop",
      exitCode: ExitCode.UNAUTHORIZED,
    });
    expect(decideOnClose(CloseCode.INCOMPATIBLE_VERSION)).toMatchObject({
      action: "stop",
      exitCode: ExitCode.REFUSED,
    });
    expect(decideOnClose(CloseCode.SUPERSEDED)).toMatchObject({ action: "stop", exitCode: ExitCode.REFUSED });
  });

  it("reconnects on the protocol's retryable codes and on transport closes", () => {
    for (const code of [
      CloseCode.PROTOCOL_ERROR,
      CloseCode.HELLO_TIMEOUT,
      CloseCode.HEARTBEAT_TIMEOUT,
      CloseCode.GOING_AWAY,
      CloseCode.SESSION_UNKNOWN,
      CloseCode.LIMIT_EXCEEDED,
      1000,
      1001,
      1006,
      1011,
      4999,
    ]) {
      expect(decideOnClose(code), `code ${code}`).toEqual({ action: "reconnect" });
    }
  });

  it("agrees with isTerminalCloseCode for every protocol close code", () => {
    for (const code of Object.values(CloseCode)) {
      expect(decideOnClose(code).action === "stop", `code ${code}`).toBe(isTerminalCloseCode(code));
    }
  });
});
