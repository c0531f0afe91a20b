// GET /performance/report and GET /alerts/active as zod, for the document: schema/monitoring.ts
// holds them as TypeScript interfaces, so these follow them and the checks at the end make tsc fail
// the moment the two differ. Once monitoring.ts states them in zod, this file goes.
import { z } from "zod";
import {
  type ActiveAlerts as ActiveAlertsType,
  ALERT_RULES,
  AlertThresholds,
  HEALTH_COMPONENTS,
  type HealthScore as HealthScoreType,
  type PerformanceReport as PerformanceReportType,
  REPORT_WINDOWS,
} from "../../schema/monitoring.ts";

const Percentiles = z
  .object({ p50: z.number().nullable(), p95: z.number().nullable(), p99: z.number().nullable() })
  .describe("Milliseconds; null where the window holds no observation.");

export const ReportRow = z.object({
  requests: z.number().int(),
  errors: z.number().int(),
  errorRate: z.number().nullable().describe("errors / requests, null without requests."),
  topErrors: z.array(z.object({ code: z.string(), count: z.number().int() })),
  latencyMs: Percentiles,
  ttftMs: Percentiles.describe("Time to first token."),
  tokensPerSecond: z.number().nullable(),
  promptTokens: z.number().int(),
  completionTokens: z.number().int(),
});

const WindowReport = z.object({
  overall: ReportRow,
  byModel: z.array(ReportRow.extend({ model: z.string(), version: z.string().nullable() })),
  byAgent: z.array(ReportRow.extend({ agent: z.string(), pool: z.string() })),
});

export const HealthScore = z.object({
  score: z.number().min(0).max(100).describe("0-100."),
  components: z.array(
    z.object({
      name: z.enum(HEALTH_COMPONENTS),
      value: z.number().min(0).max(1).describe("0-1, 1 healthy."),
      weight: z.number(),
      detail: z.string().describe("What lowers it, in words with the numbers."),
    }),
  ),
});

const MinutePoint = z.object({
  t: z.number().describe("Start of the minute, epoch ms."),
  requests: z.number().int(),
  errors: z.number().int(),
  completionTokens: z.number().int(),
  generationMs: z.number().describe("Time spent generating (first token to last) by successful requests."),
  latencyMs: z.unknown().describe("The minute's latencies in ms, as a DDSketch in JSON."),
});

export const PerformanceReport = z.object({
  generatedAt: z.string(),
  windows: z.record(z.enum(REPORT_WINDOWS), WindowReport).describe("Every window (1m, 5m, 1h, 24h)."),
  resources: z.array(
    z.object({
      agent: z.string(),
      pool: z.string(),
      up: z.boolean(),
      memoryUsedPercent: z.number().nullable(),
      memoryPressure: z.string().nullable(),
      cpuPercent: z.number().nullable(),
      gpuPercent: z.number().nullable(),
      tokensPerSecond: z.number().nullable(),
      inFlight: z.number().int(),
      capacity: z.number().int(),
    }),
  ),
  health: HealthScore,
  unreachablePools: z
    .array(z.string())
    .describe("Pools whose hub did not answer: their numbers are missing from the report."),
  series: z.array(MinutePoint).describe("The last hour per minute, all pools summed, oldest first."),
});

export const Alert = z.object({
  rule: z.enum(ALERT_RULES),
  severity: z.enum(["warning", "critical"]),
  since: z.string().describe("When the condition was first seen (continuously since)."),
  labels: z.record(z.string(), z.string()),
  value: z.number(),
  threshold: z.number(),
  summary: z.string(),
});

export const ActiveAlerts = z.object({
  generatedAt: z.string(),
  alerts: z.array(Alert),
  thresholds: AlertThresholds,
  unreachablePools: z.array(z.string()),
});

/** Compiles only when A and B are assignable both ways. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Holds<T extends true> = T;
export type MonitoringShapesMatch = [
  Holds<Same<z.output<typeof PerformanceReport>, PerformanceReportType>>,
  Holds<Same<z.output<typeof ActiveAlerts>, ActiveAlertsType>>,
  Holds<Same<z.output<typeof HealthScore>, HealthScoreType>>,
];
