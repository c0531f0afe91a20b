// Stop sequences on streamed text, as every engine uses them: what is held back, where the text is
// cut, and that tokens travel with the text they produced.
import { describe, expect, it } from "vitest";
import { StopSequences } from "../../node-agent/engines/stop-sequences.ts";

describe("StopSequences", () => {
  it("passes text through at once when no stop sequence could start in it", () => {
    const stops = new StopSequences(["END"]);
    expect(stops.push("hello ", 1)).toEqual({ text: "hello ", tokens: 1, stopped: false });
    expect(stops.push("world", 2)).toEqual({ text: "world", tokens: 2, stopped: false });
    expect(stops.end()).toEqual({ text: "", tokens: 0 });
  });

  it("holds a tail that could become a stop sequence, and releases it with its tokens once it cannot", () => {
    const stops = new StopSequences(["END"]);
    expect(stops.push("the E", 2)).toEqual({ text: "the ", tokens: 2, stopped: false });
    expect(stops.push("N", 1)).toEqual({ text: "", tokens: 0, stopped: false });
    expect(stops.push("d", 1)).toEqual({ text: "ENd", tokens: 2, stopped: false });
  });

  it("cuts before the earliest stop sequence, even one split across pushes, and drops what follows", () => {
    const stops = new StopSequences(["zzz", "END"]);
    expect(stops.push("one E", 2)).toEqual({ text: "one ", tokens: 2, stopped: false });
    expect(stops.push("ND two zzz", 3)).toEqual({ text: "", tokens: 0, stopped: true });
    const late = new StopSequences(["zzz", "END"]);
    expect(late.push("a zzz b END", 4)).toEqual({ text: "a ", tokens: 4, stopped: true });
  });

  it("ends with everything held plus a tail that is not checked for stops", () => {
    const stops = new StopSequences(["END"]);
    expect(stops.push("x EN", 2)).toEqual({ text: "x ", tokens: 2, stopped: false });
    expect(stops.end({ text: "D\uFFFD", tokens: 1 })).toEqual({ text: "END\uFFFD", tokens: 1 });
  });
});
