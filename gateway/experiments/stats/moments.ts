// Streaming mean and variance (Welford 1962), mergeable across hubs with Chan, Golub & LeVeque's
// pairwise update (1979): the sufficient statistics the sequential tests read.
import { z } from "zod";

export const MomentsJson = z.object({
  n: z.number().int().nonnegative(),
  mean: z.number().finite(),
  /** Sum of squared deviations from the mean. */
  m2: z.number().finite().nonnegative(),
});
export type MomentsJson = z.infer<typeof MomentsJson>;

export class Moments {
  #n = 0;
  #mean = 0;
  #m2 = 0;

  static fromJSON(json: MomentsJson): Moments {
    const moments = new Moments();
    if (json.n === 0 && (json.mean !== 0 || json.m2 !== 0))
      throw new Error("moments with n = 0 must be empty");
    moments.#n = json.n;
    moments.#mean = json.mean;
    moments.#m2 = json.m2;
    return moments;
  }

  /** Builds moments from plain sums (n, Σx, Σx²), as a reference or from a one-pass source. */
  static fromSums(n: number, sum: number, sumSquares: number): Moments {
    const moments = new Moments();
    if (n > 0) {
      moments.#n = n;
      moments.#mean = sum / n;
      moments.#m2 = Math.max(0, sumSquares - (sum * sum) / n);
    }
    return moments;
  }

  get n(): number {
    return this.#n;
  }

  get mean(): number {
    return this.#mean;
  }

  /** The unbiased sample variance; NaN below two observations. */
  get variance(): number {
    return this.#n < 2 ? Number.NaN : this.#m2 / (this.#n - 1);
  }

  add(x: number): void {
    this.#n += 1;
    const delta = x - this.#mean;
    this.#mean += delta / this.#n;
    this.#m2 += delta * (x - this.#mean);
  }

  merge(other: Moments): void {
    if (other.#n === 0) return;
    if (this.#n === 0) {
      this.#n = other.#n;
      this.#mean = other.#mean;
      this.#m2 = other.#m2;
      return;
    }
    const n = this.#n + other.#n;
    const delta = other.#mean - this.#mean;
    this.#mean += (delta * other.#n) / n;
    this.#m2 += other.#m2 + (delta * delta * this.#n * other.#n) / n;
    this.#n = n;
  }

  clone(): Moments {
    return Moments.fromJSON(this.toJSON());
  }

  toJSON(): MomentsJson {
    return { n: this.#n, mean: this.#mean, m2: this.#m2 };
  }
}
