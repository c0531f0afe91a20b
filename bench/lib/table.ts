// Plain-text tables for the terminal (and the README): right-aligned numbers, one header row.
import type { Spread } from "./stats.ts";

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number)))
      .join("  ");
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

export function num(v: number, digits = 2): string {
  if (!Number.isFinite(v)) return "n/a";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return v.toFixed(digits);
}

/** "median [min–max]" over repetitions. */
export function cell(s: Spread, digits = 2): string {
  if (!Number.isFinite(s.median)) return "n/a";
  if (s.reps.length <= 1) return num(s.median, digits);
  return `${num(s.median, digits)} [${num(s.min, digits)}–${num(s.max, digits)}]`;
}

export function bytes(n: number): string {
  if (!Number.isFinite(n)) return "n/a";
  const abs = Math.abs(n);
  if (abs >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (abs >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (abs >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

export interface TargetCheck {
  target: string;
  measured: string;
  pass: boolean;
}

export function targetsTable(checks: TargetCheck[]): string {
  return table(
    ["target", "measured (median [min–max])", "result"],
    checks.map((c) => [c.target, c.measured, c.pass ? "PASS" : "FAIL"]),
  );
}
