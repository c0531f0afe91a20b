// The hub's telemetry shell on its own: per-request events to Workers Analytics Engine when the
// binding exists (a recording stand-in for the binding, which has no local implementation that
// can be read back) and none without it; refused requests labelled without the caller's text.
import { describe, expect, it } from "vitest";
import { HubTelemetry, type TelemetryView, UNKNOWN_MODEL_LABEL } from "../../gateway/hub/hub-telemetry.ts";
import type { DispatchRequest } from "../../schema/hub.ts";
import { EMPTY_ROUTING_TABLE } from "../../schema/registry.ts";

const view: TelemetryView = {
  pool: "lab-a",
  agents: () => [],
  breakers: () => [],
  isOpen: () => false,
  queueByModel: () => ({}),
  routingTable: () => EMPTY_ROUTING_TABLE,
};

function request(model: string): DispatchRequest {
  return {
    requestId: "r1",
    model,
    prompt: "hi",
    params: { maxTokens: 4 },
    response: { api: "chat", stream: false, includeUsage: false, requestId: "r1", receivedAt: 0 },
    subject: "s",
    caller: "c",
  };
}

const noStorage = {} as DurableObjectStorage;

describe("HubTelemetry", () => {
  it("writes one Analytics Engine data point per request when the binding exists", () => {
    const points: AnalyticsEngineDataPoint[] = [];
    const dataset = {
      writeDataPoint: (p?: AnalyticsEngineDataPoint) => p && points.push(p),
    } as AnalyticsEngineDataset;
    const telemetry = new HubTelemetry(noStorage, () => 85, dataset, 10_000, Date.now());
    telemetry.refused(request("demo"), "no_agent", "NO_AGENT_AVAILABLE", view, Date.now());
    expect(points).toEqual([
      {
        indexes: ["demo"],
        blobs: ["lab-a", "demo", "chat", "no_agent", "NO_AGENT_AVAILABLE", ""],
        doubles: [0, -1, 0, 0],
      },
    ]);
  });

  it("writes nothing without the binding, and a failing binding does not fail the request", () => {
    const telemetry = new HubTelemetry(noStorage, () => 85, undefined, 10_000, Date.now());
    expect(() =>
      telemetry.refused(request("demo"), "no_agent", "NO_AGENT_AVAILABLE", view, Date.now()),
    ).not.toThrow();
    const broken = {
      writeDataPoint: () => {
        throw new Error("analytics down");
      },
    } as AnalyticsEngineDataset;
    const withBroken = new HubTelemetry(noStorage, () => 85, broken, 10_000, Date.now());
    expect(() =>
      withBroken.refused(request("demo"), "no_agent", "NO_AGENT_AVAILABLE", view, Date.now()),
    ).not.toThrow();
    expect(withBroken.counters.count("ml_inference_requests_total", ["demo", "", "chat", "5xx"])).toBe(1);
  });

  it("labels a model nobody serves as one value, never the caller's text", () => {
    const points: AnalyticsEngineDataPoint[] = [];
    const dataset = {
      writeDataPoint: (p?: AnalyticsEngineDataPoint) => p && points.push(p),
    } as AnalyticsEngineDataset;
    const telemetry = new HubTelemetry(noStorage, () => 85, dataset, 10_000, Date.now());
    for (let i = 0; i < 100; i++) {
      telemetry.refused(request(`junk-${i}`), "model_not_found", "MODEL_NOT_FOUND", view, Date.now());
    }
    expect(
      telemetry.counters.count("ml_inference_requests_total", [UNKNOWN_MODEL_LABEL, "", "chat", "4xx"]),
    ).toBe(100);
    expect(JSON.stringify(telemetry.counters.families("lab-a"))).not.toContain("junk-");
    expect(JSON.stringify(points)).not.toContain("junk-");
    // The model labels stay free for real models.
    expect(telemetry.counters.modelLabels("real:1.0.0")).toEqual(["real", "1.0.0"]);
  });
});
