// A safetensors file checked in JavaScript before MLX opens it: node-mlx 0.0.7 segfaults on a file
// that is not safetensors and reads past the end of a truncated one (loading garbage weights
// without a word). Only the header is read: an 8-byte length, a JSON table of tensors, and their
// offsets must tile the rest of the file exactly.
import { open } from "node:fs/promises";

const ITEM_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  U16: 2,
  I16: 2,
  F16: 2,
  BF16: 2,
  U32: 4,
  I32: 4,
  F32: 4,
  U64: 8,
  I64: 8,
  F64: 8,
};
/** Headers of real models are a few hundred KB at most. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Throws an Error saying what is wrong unless `path` is a whole, well-formed safetensors file. */
export async function checkSafetensors(path: string): Promise<void> {
  const file = await open(path, "r");
  try {
    const { size } = await file.stat();
    if (size < 8) throw new Error(`${size} bytes is too short`);
    const prefix = Buffer.alloc(8);
    await file.read(prefix, 0, 8, 0);
    const headerBytes = Number(prefix.readBigUInt64LE(0));
    if (headerBytes < 2 || headerBytes > Math.min(MAX_HEADER_BYTES, size - 8)) {
      throw new Error(`its header length (${headerBytes} bytes) does not fit a file of ${size} bytes`);
    }
    const header = Buffer.alloc(headerBytes);
    await file.read(header, 0, headerBytes, 8);
    let table: Record<string, unknown>;
    try {
      table = JSON.parse(header.toString("utf8"));
    } catch {
      throw new Error("its header is not JSON");
    }
    const spans: Array<[number, number]> = [];
    for (const [name, entry] of Object.entries(table)) {
      if (name === "__metadata__") continue;
      const {
        dtype,
        shape,
        data_offsets: offsets,
      } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const item = ITEM_BYTES[String(dtype)];
      const dims =
        Array.isArray(shape) && shape.every((d) => Number.isInteger(d) && d >= 0)
          ? (shape as number[])
          : undefined;
      const [start, end] = Array.isArray(offsets) ? (offsets as number[]) : [];
      if (!item || !dims || !Number.isInteger(start) || !Number.isInteger(end)) {
        throw new Error(`tensor ${name} has no valid dtype, shape and data_offsets`);
      }
      if ((end as number) - (start as number) !== dims.reduce((a, b) => a * b, 1) * item) {
        throw new Error(
          `tensor ${name} takes ${(end as number) - (start as number)} bytes, not what its shape needs`,
        );
      }
      spans.push([start as number, end as number]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    let at = 0;
    for (const [start, end] of spans) {
      if (start !== at) throw new Error("its tensors overlap or leave gaps");
      at = end;
    }
    const expected = 8 + headerBytes + at;
    if (expected !== size)
      throw new Error(`its tensors need ${expected} bytes; the file has ${size} (truncated?)`);
  } finally {
    await file.close();
  }
}
