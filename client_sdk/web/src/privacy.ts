/** Local privacy measures applied to an update before it leaves the device. */

import type { Tensor } from "./wire.js";

/** The L2 norm of all tensors taken together (float64 accumulation). */
export function globalNorm(tensors: readonly Tensor[]): number {
  let sum = 0;
  for (const t of tensors) for (const v of t.data as Float32Array) sum += v * v;
  return Math.sqrt(sum);
}

/** Scale the tensors so their global L2 norm is at most `maxNorm` (same direction). */
export function clipByGlobalNorm(tensors: readonly Tensor[], maxNorm: number): [Tensor[], number] {
  const norm = globalNorm(tensors);
  if (norm <= maxNorm || norm === 0) return [[...tensors], norm];
  const scale = Math.fround(maxNorm / norm);
  return [tensors.map((t) => ({ dtype: t.dtype, shape: t.shape, data: (t.data as Float32Array).map((v) => v * scale) })), norm];
}
