// The small rules registry loads rest on: where an artifact is fetched from (the gateway's HTTP
// base, path prefix kept) and how much memory a load may count on (vm_stat on macOS).
import { freemem } from "node:os";
import { describe, expect, it } from "vitest";
import { availableMemoryBytes, parseVmStat } from "../../node-agent/health.ts";
import { artifactUrl, gatewayHttpUrlOf } from "../../node-agent/registry-loads.ts";

describe("artifact URLs", () => {
  it.each([
    ["ws://127.0.0.1:8787/agents/connect", "http://127.0.0.1:8787/models/demo:2.0.0/artifact"],
    ["wss://gw.example.com/agents/connect", "https://gw.example.com/models/demo:2.0.0/artifact"],
    ["wss://example.com/orchard/agents/connect", "https://example.com/orchard/models/demo:2.0.0/artifact"],
    ["https://example.com/orchard/", "https://example.com/orchard/models/demo:2.0.0/artifact"],
  ])("resolve against %s as %s", (gateway, url) => {
    expect(artifactUrl(gatewayHttpUrlOf(gateway), "/models/demo:2.0.0/artifact")).toBe(url);
  });
});

const VM_STAT = `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               10000.
Pages active:                            400000.
Pages inactive:                           90000.
Pages speculative:                         5000.
Pages throttled:                              0.
Pages wired down:                        150000.
Pages purgeable:                           2000.
`;

describe("memory a load can count on", () => {
  it("on macOS is vm_stat's free, inactive, speculative and purgeable pages", () => {
    expect(parseVmStat(VM_STAT)).toBe((10000 + 90000 + 5000 + 2000) * 16384);
    expect(availableMemoryBytes("darwin", () => VM_STAT)).toBe(107000 * 16384);
  });

  it("falls back to os.freemem when vm_stat fails or reads oddly, and elsewhere", () => {
    const close = (n: number) => Math.abs(n - freemem()) < 256 * 1024 * 1024;
    expect(parseVmStat("no such output")).toBeUndefined();
    expect(close(availableMemoryBytes("darwin", () => "garbage"))).toBe(true);
    expect(
      close(
        availableMemoryBytes("darwin", () => {
          throw new Error("vm_stat: not found");
        }),
      ),
    ).toBe(true);
    expect(close(availableMemoryBytes("linux"))).toBe(true);
  });
});
