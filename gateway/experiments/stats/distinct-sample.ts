// A bounded sample of the distinct subjects an arm saw, for the sample-ratio check: Gibbons'
// distinct sampling ("Distinct Sampling for Highly-Accurate Answers to Distinct Values Queries and
// Event Reports", VLDB 2001). At level k only hashes whose low k bits are 0 are kept, so each
// subject is in the sample with probability 2^-k, independently of its arm (the hash has its own
// salt, see subjectSampleHash); when the sample outgrows its cap the level rises and the sample is
// thinned. Counts at a common level are binomial thinnings of the true counts, so a chi-square on
// them is a valid (if smaller) sample-ratio test; merging is a union at the higher level.
import { z } from "zod";

/** Distinct subject hashes kept per arm: 16 KiB as binary, ~22 KB as base64 JSON. */
export const DISTINCT_SAMPLE_CAP = 4096;
const MAX_LEVEL = 32;

export const DistinctSampleJson = z.object({
  level: z.number().int().min(0).max(MAX_LEVEL),
  /** The kept hashes, as little-endian uint32s in ascending order, base64. */
  hashes: z.string().max(Math.ceil((DISTINCT_SAMPLE_CAP * 4) / 3) * 4 + 4),
});
export type DistinctSampleJson = z.infer<typeof DistinctSampleJson>;

/** Whether a 32-bit hash survives sampling level k (its low k bits are 0). */
export function keptAtLevel(hash: number, level: number): boolean {
  if (level >= 32) return hash >>> 0 === 0;
  return level === 0 || (hash & (0xffffffff >>> (32 - level))) === 0;
}

export class DistinctSample {
  #level = 0;
  #hashes = new Set<number>();
  readonly cap: number;

  constructor(cap = DISTINCT_SAMPLE_CAP) {
    this.cap = cap;
  }

  static fromJSON(json: DistinctSampleJson): DistinctSample {
    const sample = new DistinctSample();
    sample.#level = json.level;
    const bytes = decodeBase64(json.hashes);
    if (bytes.length % 4 !== 0) throw new Error("distinct sample hashes are not whole uint32s");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let offset = 0; offset < bytes.length; offset += 4) {
      const hash = view.getUint32(offset, true);
      if (!keptAtLevel(hash, json.level))
        throw new Error(`distinct sample hash ${hash} is not kept at level ${json.level}`);
      sample.#hashes.add(hash);
    }
    if (sample.#hashes.size > sample.cap)
      throw new Error(`distinct sample holds more than ${sample.cap} hashes`);
    return sample;
  }

  /** The sampling level k: each distinct subject is kept with probability 2^-k. */
  get level(): number {
    return this.#level;
  }

  /** Distinct subjects in the sample at its own level. */
  get size(): number {
    return this.#hashes.size;
  }

  /** Distinct subjects in the sample at a level at or above its own (thinned to it). */
  countAtLevel(level: number): number {
    if (level < this.#level)
      throw new Error(`the sample is at level ${this.#level}, cannot count at ${level}`);
    if (level === this.#level) return this.#hashes.size;
    let count = 0;
    for (const hash of this.#hashes) if (keptAtLevel(hash, level)) count += 1;
    return count;
  }

  /** Estimated distinct subjects: the sample size scaled by 2^k. */
  get estimate(): number {
    return this.#hashes.size * 2 ** this.#level;
  }

  add(hash: number): void {
    const h = hash >>> 0;
    if (!keptAtLevel(h, this.#level) || this.#hashes.has(h)) return;
    this.#hashes.add(h);
    if (this.#hashes.size > this.cap) this.#raiseTo(this.#level + 1);
  }

  merge(other: DistinctSample): void {
    if (other.#level > this.#level) this.#raiseTo(other.#level);
    for (const hash of other.#hashes) if (keptAtLevel(hash, this.#level)) this.#hashes.add(hash);
    if (this.#hashes.size > this.cap) this.#raiseTo(this.#level + 1);
  }

  toJSON(): DistinctSampleJson {
    const hashes = [...this.#hashes].sort((x, y) => x - y);
    const bytes = new Uint8Array(hashes.length * 4);
    const view = new DataView(bytes.buffer);
    hashes.forEach((hash, i) => {
      view.setUint32(i * 4, hash, true);
    });
    return { level: this.#level, hashes: encodeBase64(bytes) };
  }

  #raiseTo(level: number): void {
    let next = level;
    for (;;) {
      for (const hash of this.#hashes) if (!keptAtLevel(hash, next)) this.#hashes.delete(hash);
      if (this.#hashes.size <= this.cap || next >= MAX_LEVEL) break;
      next += 1;
    }
    this.#level = next;
  }
}

function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x2000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x2000));
  }
  return btoa(binary);
}

function decodeBase64(text: string): Uint8Array {
  let binary: string;
  try {
    binary = atob(text);
  } catch {
    throw new Error("distinct sample hashes are not valid base64");
  }
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
