// The AgentHub's pure parts, with fake clocks: when it wakes, what it remembers about models,
// how it answers hello, which model answers a request, and its counters across a restore.
import { describe, expect, it } from "vitest";
import { answerHello } from "../../gateway/hub/handshake.ts";
import { HubCounters, MAX_COUNTED_MODELS, OTHER_MODELS } from "../../gateway/hub/hub-metrics.ts";
import {
  KNOWN_MODEL_KEY_PREFIX,
  KNOWN_MODEL_TTL_MS,
  KnownModels,
  MAX_KNOWN_MODELS,
} from "../../gateway/hub/known-models.ts";
import { resolveModel } from "../../gateway/hub/model-resolution.ts";
import { nextAlarm } from "../../gateway/hub/next-alarm.ts";
import type { ModelAvailability } from "../../gateway/hub/scheduling.ts";
import { CloseCode } from "../../schema/protocol.ts";
import { helloFrame } from "./helpers.ts";

describe("nextAlarm", () => {
  const idle = {
    now: 1_000,
    helloDeadlines: [],
    lastActivity: [],
    heartbeatTimeoutMs: 45_000,
    tokenExpiries: [],
    requestDeadline: null,
    flushAt: null,
  };

  it("schedules nothing for an idle pool: no agents, no requests, nothing to flush", () => {
    expect(nextAlarm(idle)).toBeNull();
  });

  it("wakes when the quietest agent could have timed out, not every heartbeat interval", () => {
    expect(nextAlarm({ ...idle, lastActivity: [900, 500, 800] })).toBe(45_500);
  });

  it("takes the earliest of hello, token, request and flush deadlines", () => {
    const inputs = { ...idle, lastActivity: [1_000], helloDeadlines: [9_000], tokenExpiries: [7_000] };
    expect(nextAlarm(inputs)).toBe(7_000);
    expect(nextAlarm({ ...inputs, requestDeadline: 5_000 })).toBe(5_000);
    expect(nextAlarm({ ...inputs, requestDeadline: 5_000, flushAt: 3_000 })).toBe(3_000);
  });

  it("never schedules in the past: an overdue check runs now", () => {
    expect(nextAlarm({ ...idle, helloDeadlines: [10] })).toBe(1_000);
  });
});

describe("KnownModels", () => {
  it("persists a new model at once, and its last-seen time at most hourly on the flush cycle", () => {
    const models = new KnownModels();
    // At once: a restart before the next flush must not turn the model's 503s into 404s.
    expect(models.announce(["a"], 0)).toEqual({
      puts: { [`${KNOWN_MODEL_KEY_PREFIX}a`]: { firstSeenAt: 0, lastSeenAt: 0 } },
      deletes: [],
    });
    expect(models.announce(["a"], 10)).toEqual({ puts: {}, deletes: [] });
    expect(models.flush(10)).toEqual({ puts: {}, deletes: [] });
    models.announce(["a"], 60_000);
    expect(models.dirty).toBe(false);
    models.announce(["a"], 3_600_000);
    expect(models.flush(3_600_000).puts).toEqual({
      [`${KNOWN_MODEL_KEY_PREFIX}a`]: { firstSeenAt: 0, lastSeenAt: 3_600_000 },
    });
  });

  it("is bounded: past MAX_KNOWN_MODELS the least recently announced are forgotten and deleted", () => {
    const models = new KnownModels();
    for (let i = 0; i < MAX_KNOWN_MODELS + 10; i++) models.announce([`m${i}`], i);
    expect(models.size).toBe(MAX_KNOWN_MODELS);
    expect(models.has("m0")).toBe(false);
    expect(models.has("m9")).toBe(false);
    expect(models.has("m10")).toBe(true);
    // Each was written when first seen; the forgotten ones are deleted on the next flush.
    const writes = models.flush(1_000);
    expect(writes.puts).toEqual({});
    expect(writes.deletes).toEqual(Array.from({ length: 10 }, (_, i) => `${KNOWN_MODEL_KEY_PREFIX}m${i}`));
  });

  it("forgets a model nobody announced for KNOWN_MODEL_TTL_MS, and deletes its stored key", () => {
    const models = new KnownModels();
    models.announce(["old", "fresh"], 0);
    models.flush(0);
    models.announce(["fresh"], KNOWN_MODEL_TTL_MS - 1);
    const writes = models.flush(KNOWN_MODEL_TTL_MS);
    expect(models.has("old")).toBe(false);
    expect(models.has("fresh")).toBe(true);
    expect(writes.deletes).toEqual([`${KNOWN_MODEL_KEY_PREFIX}old`]);
  });

  it("restores per-model keys and migrates the legacy whole-list value", () => {
    const models = new KnownModels();
    models.restore(
      [[`${KNOWN_MODEL_KEY_PREFIX}a`, { firstSeenAt: 5, lastSeenAt: 900 }]],
      { a: 1, legacy: 7 },
      1_000,
    );
    expect(models.firstSeenAt("a")).toBe(5);
    expect(models.firstSeenAt("legacy")).toBe(7);
    expect(models.flush(1_000).puts).toEqual({
      [`${KNOWN_MODEL_KEY_PREFIX}legacy`]: { firstSeenAt: 7, lastSeenAt: 1_000 },
    });
  });
});

describe("answerHello", () => {
  it("negotiates the highest common version and the capabilities the hub knows", () => {
    expect(answerHello(helloFrame("a", { protocol: 1 }), "a")).toEqual({
      accept: true,
      protocol: 1,
      capabilities: [],
    });
    expect(
      answerHello(
        helloFrame("a", { protocol: 2, minProtocol: 1, capabilities: ["structured_output", "x"] }),
        "a",
      ),
    ).toEqual({ accept: true, protocol: 2, capabilities: ["duplicate_answer", "structured_output"] });
  });

  it("refuses disjoint ranges and a mismatched agent id", () => {
    expect(answerHello(helloFrame("a", { protocol: 3, minProtocol: 3 }), "a")).toMatchObject({
      accept: false,
      code: CloseCode.INCOMPATIBLE_VERSION,
    });
    expect(answerHello(helloFrame("a"), "b")).toMatchObject({
      accept: false,
      code: CloseCode.PROTOCOL_ERROR,
    });
  });
});

describe("resolveModel", () => {
  const pool = (availability: Record<string, ModelAvailability>, served: string[] = []) => ({
    availability: (model: string) => availability[model] ?? "unknown",
    servedModels: () => served as never[],
  });
  const config = { defaultModel: undefined, modelFallbacks: new Map([["big", ["small", "tiny"]]]) };

  it("serves the model named, else the first servable fallback, else says which error", () => {
    expect(resolveModel("big", config, pool({ big: "servable" }))).toMatchObject({ ok: true, model: "big" });
    expect(resolveModel("big", config, pool({ big: "unavailable", tiny: "servable" }))).toMatchObject({
      ok: true,
      model: "tiny",
      requested: "big",
      fallback: true,
    });
    expect(resolveModel("big", config, pool({ big: "unavailable" }))).toMatchObject({
      ok: false,
      code: "NO_AGENT_AVAILABLE",
    });
    expect(resolveModel("nope", config, pool({}))).toMatchObject({ ok: false, code: "MODEL_NOT_FOUND" });
  });

  it("without a model: DEFAULT_MODEL, else the first served model; a name that is no model id is not found", () => {
    expect(resolveModel(undefined, config, pool({ a: "servable" }, ["a", "b"]))).toMatchObject({
      model: "a",
    });
    expect(
      resolveModel(undefined, { ...config, defaultModel: "b" }, pool({ b: "servable" }, ["a", "b"])),
    ).toMatchObject({ model: "b" });
    expect(resolveModel(undefined, config, pool({}))).toMatchObject({
      ok: false,
      code: "NO_AGENT_AVAILABLE",
    });
    expect(resolveModel("demo:1:2", config, pool({ "demo:1:2": "servable" }))).toMatchObject({
      ok: false,
      code: "MODEL_NOT_FOUND",
    });
  });
});

describe("HubCounters", () => {
  it("counts per model, bounded, and reports the first change since a flush", () => {
    let dirtied = 0;
    const counters = new HubCounters(() => dirtied++);
    counters.outcome("ok", "a");
    counters.outcome("ok", "a");
    counters.tokens("a", 3, 4);
    expect(dirtied).toBe(1);
    expect(counters.flush()?.byModel.a).toEqual({
      requests: expect.objectContaining({ ok: 2 }),
      tokens: { prompt: 3, completion: 4 },
    });
    expect(counters.flush()).toBeNull();
    for (let i = 0; i < MAX_COUNTED_MODELS + 5; i++) counters.outcome("ok", `m${i}`);
    const byModel = counters.snapshot().byModel;
    expect(Object.keys(byModel)).toHaveLength(MAX_COUNTED_MODELS + 1);
    expect(byModel[OTHER_MODELS]?.requests.ok).toBe(6); // "a" and m0..m254 fill the slots; m255..m260
  });

  it("a restore adds what storage held to what was counted before it finished", () => {
    const before = new HubCounters();
    before.outcome("ok", "a");
    before.retry();
    const stored = before.snapshot();
    const counters = new HubCounters();
    counters.outcome("upstream_error", "a");
    counters.restore(stored);
    const merged = counters.snapshot();
    expect(merged.requests).toMatchObject({ ok: 1, upstream_error: 1 });
    expect(merged.byModel.a?.requests).toMatchObject({ ok: 1, upstream_error: 1 });
    expect(merged.retries).toBe(1);
    counters.restore({ requests: "garbage" }); // malformed: logged, counts kept
    expect(counters.snapshot()).toEqual(merged);
  });
});
