// Numbers in the words of health details and alert summaries.

export function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`;
}

export function seconds(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** A window's length: "2 min", "90 s". */
export function duration(ms: number): string {
  return ms >= 60_000 && ms % 60_000 === 0 ? `${ms / 60_000} min` : seconds(ms);
}
