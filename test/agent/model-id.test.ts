// Model ids (`name` or `name:version`): which text has a version, that every id has exactly one
// reading, and that the hand check agrees with the wire's ModelName schema.
import { describe, expect, it } from "vitest";
import {
  formatModelId,
  isModelId,
  isModelVersion,
  ModelId,
  ModelIdError,
  parseModelId,
} from "../../schema/model-id.ts";
import { ModelName } from "../../schema/protocol.ts";

describe("parseModelId", () => {
  it.each([
    ["demo", "demo", null],
    ["demo:1", "demo", "1"],
    ["demo:1.2.0", "demo", "1.2.0"],
    ["demo:1.0.0-rc.1", "demo", "1.0.0-rc.1"],
    ["demo:2.1+g1a2b3c", "demo", "2.1+g1a2b3c"],
    ["org/demo@hf:0.3", "org/demo@hf", "0.3"],
    // Ollama-style tags are not versions: they stay part of the name.
    ["qwen2.5:0.5b", "qwen2.5:0.5b", null],
    ["llama3:8b-instruct", "llama3:8b-instruct", null],
    ["demo:latest", "demo:latest", null],
    ["demo:v2", "demo:v2", null],
    ["demo:", "demo:", null],
    // Split on the last ':' only, so a tag and a version can both be there.
    ["qwen2.5:0.5b:1.1", "qwen2.5:0.5b", "1.1"],
  ])("reads %s as name %s, version %s", (text, name, version) => {
    expect(parseModelId(text)).toEqual({ name, version });
    expect(isModelId(text)).toBe(true);
  });

  it.each([
    ["", "empty"],
    ["demo:1:2", "two version suffixes"],
    [":1", "no name"],
    ["-demo", "does not start with a letter or digit"],
    ["my model", "a space"],
    ["a".repeat(129), "longer than 128"],
  ])("refuses %j (%s) with ERR_MODEL_ID", (text) => {
    expect(isModelId(text)).toBe(false);
    expect(() => parseModelId(text)).toThrow(
      expect.objectContaining({ name: "ModelIdError", code: "ERR_MODEL_ID" }),
    );
  });
});

describe("formatModelId", () => {
  it("writes name:version, and the name alone without a version", () => {
    expect(formatModelId("demo", "1.2.0")).toBe("demo:1.2.0");
    expect(formatModelId("demo")).toBe("demo");
    expect(formatModelId("demo", null)).toBe("demo");
    expect(formatModelId("qwen2.5:0.5b", "3")).toBe("qwen2.5:0.5b:3");
  });

  it("refuses what would read back differently, or is no id at all", () => {
    // "demo:1" alone would read back as demo, version 1.
    expect(() => formatModelId("demo:1")).toThrow(/cannot be a model name/);
    expect(() => formatModelId("demo:1", "2")).toThrow(/cannot be a model name/);
    expect(() => formatModelId("demo", "latest")).toThrow(/not a model version/);
    expect(() => formatModelId("demo", "")).toThrow(/not a model version/);
    expect(() => formatModelId("my model", "1")).toThrow(ModelIdError);
    expect(() => formatModelId("a".repeat(127), "1")).toThrow(ModelIdError);
  });

  it("round-trips: format(parse(id)) is id, and parse(format(name, version)) is {name, version}", () => {
    const ids = ["demo", "demo:1.2.0", "qwen2.5:0.5b", "qwen2.5:0.5b:1.1", "org/demo@hf:0.3-beta+b7"];
    for (const id of ids) {
      const { name, version } = parseModelId(id);
      expect(formatModelId(name, version)).toBe(id);
    }
    for (const [name, version] of [
      ["demo", "1"],
      ["demo:latest", "2.0"],
      ["demo", null],
    ] as const) {
      expect(parseModelId(formatModelId(name, version))).toEqual({ name, version });
    }
  });
});

describe("isModelVersion", () => {
  it("takes digits and dots with an optional pre-release and build, nothing else", () => {
    for (const v of ["0", "1.2.3", "10.0.1-alpha", "1-rc.1", "1.0+20260101", "1.0.0-x.7.z.92+build.1"]) {
      expect(isModelVersion(v), v).toBe(true);
    }
    for (const v of ["", "v1", "1.", ".1", "1..2", "1.0-", "1.0+", "latest", "8b", "1.0-rc..1"]) {
      expect(isModelVersion(v), v).toBe(false);
    }
  });
});

describe("the ModelId schema", () => {
  it("accepts exactly the ModelName texts with at most one version suffix", () => {
    const texts = [
      "demo",
      "demo:1",
      "demo:1:2",
      "qwen2.5:0.5b",
      "a:b:c",
      "-x",
      "x y",
      "é",
      "a".repeat(128),
      "a".repeat(129),
      "A9._:/@+-z",
    ];
    for (const text of texts) {
      const twoVersions = text === "demo:1:2";
      expect(ModelId.safeParse(text).success, text).toBe(ModelName.safeParse(text).success && !twoVersions);
      expect(isModelId(text), text).toBe(ModelId.safeParse(text).success);
    }
    expect(ModelId.parse("demo:1")).toBe("demo:1");
  });
});
