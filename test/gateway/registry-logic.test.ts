// The registry's pure pieces: semver precedence (the order versions are listed in) and Range parsing.
import { describe, expect, it } from "vitest";
import { GatewayError } from "../../gateway/errors.ts";
import { parseRange } from "../../gateway/registry/artifacts.ts";
import { compareSemver } from "../../gateway/registry/semver.ts";

describe("compareSemver", () => {
  it("orders by semver 2.0.0 precedence (the specification's own example chain)", () => {
    const chain = [
      "1.0.0-alpha",
      "1.0.0-alpha.1",
      "1.0.0-alpha.beta",
      "1.0.0-beta",
      "1.0.0-beta.2",
      "1.0.0-beta.11",
      "1.0.0-rc.1",
      "1.0.0",
      "1.0.1",
      "1.2.0",
      "1.10.0",
      "2.0.0",
    ];
    const shuffled = [...chain].reverse();
    expect(shuffled.sort(compareSemver)).toEqual(chain);
    expect(compareSemver("1.0.0+build.1", "1.0.0+build.2")).toBe(0);
    expect(compareSemver("0.0.0-local", "0.0.1")).toBeLessThan(0);
  });
});

describe("parseRange", () => {
  it("reads one range of bytes and refuses the rest with 416", () => {
    expect(parseRange(null, 100)).toBeNull();
    expect(parseRange("bytes=0-9", 100)).toEqual({ offset: 0, length: 10 });
    expect(parseRange("bytes=90-", 100)).toEqual({ offset: 90, length: 10 });
    expect(parseRange("bytes=-5", 100)).toEqual({ offset: 95, length: 5 });
    expect(parseRange("bytes=-500", 100)).toEqual({ offset: 0, length: 100 });
    expect(parseRange("bytes=95-500", 100)).toEqual({ offset: 95, length: 5 });
    for (const bad of ["bytes=100-", "bytes=5-1", "bytes=-0", "bytes=-", "bytes=0-1,3-4", "lines=1-2"]) {
      expect(() => parseRange(bad, 100), bad).toThrow(GatewayError);
    }
  });
});
