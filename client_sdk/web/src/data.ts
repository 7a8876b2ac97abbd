/**
 * Where local examples come from: the DataSource interface and an in-memory one.
 *
 * A data source yields `{x, y}` batches, one pass per call; the client calls it once
 * per planned epoch with a different seed. Examples never leave the device: only the
 * update computed from them is uploaded.
 */

import { ConfigError } from "./errors.js";
import { numel } from "./wire.js";
import type { Tensor, TypedArray } from "./wire.js";

export interface Batch {
  readonly x: Tensor;
  readonly y: Tensor;
}

export interface DataSource {
  /** How many examples one pass yields. */
  count(): number;
  /** One pass in batches of `batchSize` (the last may be smaller), shuffled when `seed` is given. */
  batches(batchSize: number, seed: number | null): Iterable<Batch> | AsyncIterable<Batch>;
}

/** A small seeded PRNG (mulberry32): uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A seeded permutation of 0..n-1 (Fisher-Yates). */
export function permutation(n: number, seed: number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const random = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const tmp = order[i]!;
    order[i] = order[j]!;
    order[j] = tmp;
  }
  return order;
}

/** The rows `idx` of `t` (first dim) as a new tensor. */
export function takeRows(t: Tensor, idx: ArrayLike<number>): Tensor {
  const row = numel(t.shape.slice(1));
  const Ctor = t.data.constructor as new (n: number) => TypedArray;
  const out = new Ctor(idx.length * row);
  for (let i = 0; i < idx.length; i++) {
    const start = idx[i]! * row;
    (out as unknown as { set(a: ArrayLike<unknown>, o: number): void }).set(t.data.subarray(start, start + row) as ArrayLike<unknown>, i * row);
  }
  return { dtype: t.dtype, shape: [idx.length, ...t.shape.slice(1)], data: out };
}

/** Examples held in memory as two tensors with the same number of rows. */
export class ArrayDataSource implements DataSource {
  constructor(
    readonly x: Tensor,
    readonly y: Tensor,
  ) {
    if (x.shape.length < 1 || x.shape[0] !== y.shape[0]) {
      throw new ConfigError(`x and y need the same number of rows, got ${x.shape[0]} and ${y.shape[0]}`);
    }
    if (numel(x.shape) !== x.data.length || numel(y.shape) !== y.data.length) throw new ConfigError("tensor data does not match its shape");
  }

  count(): number {
    return this.x.shape[0]!;
  }

  *batches(batchSize: number, seed: number | null = null): Iterable<Batch> {
    if (!(batchSize >= 1)) throw new ConfigError(`batchSize must be >= 1, got ${batchSize}`);
    const n = this.count();
    const order = seed === null ? Uint32Array.from({ length: n }, (_, i) => i) : permutation(n, seed);
    for (let start = 0; start < n; start += batchSize) {
      const idx = order.subarray(start, Math.min(n, start + batchSize));
      yield { x: takeRows(this.x, idx), y: takeRows(this.y, idx) };
    }
  }
}
