// Llama 3.1+ rotary embeddings (rope_scaling.rope_type "llama3", as mlx-community's Llama 3.1/3.2
// folders say) written with plain MLX ops: the LLM package passes per-dimension `freqs` to
// fast.rope, which node-mlx 0.0.7 does not take, so every generation of such a model would fail.
import type { MlxArray, MlxCore } from "./runtime.ts";

export interface RopeConfig {
  /** Rotated dimensions (the head dimension). */
  dims: number;
  base: number;
  scaling: {
    factor?: number;
    low_freq_factor?: number;
    high_freq_factor?: number;
    original_max_position_embeddings?: number;
  };
}

/** What Attention calls: rotates x [batch, heads, tokens, headDim] starting at position `offset`. */
export interface Rope {
  forward(x: MlxArray, offset?: number): MlxArray;
}

/**
 * Meta's llama3 frequency schedule (as mlx-lm's Llama3RoPE): low frequencies divided by `factor`,
 * high ones kept, those between blended. Returned as wavelengths over 2π, fast.rope's `freqs`.
 */
export function llama3Freqs({ dims, base, scaling }: RopeConfig): number[] {
  const factor = scaling.factor ?? 1;
  const low = scaling.low_freq_factor ?? 1;
  const high = scaling.high_freq_factor ?? 4;
  const original = scaling.original_max_position_embeddings ?? 8192;
  const lowWavelen = original / low;
  const highWavelen = original / high;
  const freqs: number[] = [];
  for (let i = 0; i < dims; i += 2) {
    const freq = base ** (i / dims);
    const wavelen = 2 * Math.PI * freq;
    if (wavelen > lowWavelen) freqs.push(freq * factor);
    else if (wavelen < highWavelen) freqs.push(freq);
    else {
      const smooth = (original / wavelen - low) / (high - low);
      freqs.push(freq / ((1 - smooth) / factor + smooth));
    }
  }
  return freqs;
}

/** Non-traditional rope (halves rotated against each other) with the given wavelengths over 2π. */
export function ropeWithFreqs(mx: MlxCore, dims: number, freqs: number[]): Rope {
  const half = dims / 2;
  const inverse = mx
    .array(
      freqs.map((f) => 1 / f),
      mx.float32,
    )
    .reshape(1, half);
  return {
    forward(x, offset = 0) {
      const [, , tokens, width] = x.shape as [number, number, number, number];
      const positions = mx.arange(offset, offset + tokens, 1, mx.float32).reshape(tokens, 1);
      const angles = mx.multiply(positions, inverse);
      const cos = mx.cos(angles).astype(x.dtype);
      const sin = mx.sin(angles).astype(x.dtype);
      const first = x.index("...", mx.Slice(0, half));
      const second = x.index("...", mx.Slice(half, dims));
      const rotated = [
        mx.subtract(mx.multiply(first, cos), mx.multiply(second, sin)),
        mx.add(mx.multiply(first, sin), mx.multiply(second, cos)),
      ];
      if (width > dims) rotated.push(x.index("...", mx.Slice(dims, width)));
      return mx.concatenate(rotated, -1);
    },
  };
}

interface AttentionLike {
  selfAttn?: { rope?: unknown };
}

/**
 * Gives every attention layer of a model whose config asks for llama3 rope scaling the rope above.
 * Call after its weights are loaded (the rope holds no parameters). Returns false for other models.
 */
export function patchLlama3Rope(mx: MlxCore, model: unknown, config: Record<string, unknown>): boolean {
  const scaling = config.rope_scaling as
    | (RopeConfig["scaling"] & { rope_type?: string; type?: string })
    | undefined;
  if ((scaling?.rope_type ?? scaling?.type) !== "llama3") return false;
  if (config.rope_traditional === true)
    throw new Error("llama3 rope scaling with traditional rope is not supported");
  const heads = Number(config.num_attention_heads);
  const dims = Number(config.head_dim ?? Number(config.hidden_size) / heads);
  const rope = ropeWithFreqs(
    mx,
    dims,
    llama3Freqs({ dims, base: Number(config.rope_theta ?? 10000), scaling: scaling ?? {} }),
  );
  const layers = (model as { model?: { layers?: AttentionLike[] } }).model?.layers ?? [];
  for (const layer of layers) if (layer.selfAttn) layer.selfAttn.rope = rope;
  return layers.length > 0;
}
