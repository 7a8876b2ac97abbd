/**
 * The slice of the ONNX Runtime JavaScript API the SDK uses. `onnxruntime-web` and
 * `onnxruntime-node` both provide it (they share `onnxruntime-common`), so the trainer
 * takes the module as an argument and the core SDK never imports either.
 */

import { TrainingError } from "./errors.js";
import type { DType, Tensor, TypedArray } from "./wire.js";

export interface OrtTensor {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
  dispose?(): void;
}

export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}

export interface OrtModule {
  readonly InferenceSession: { create(model: Uint8Array, options?: object): Promise<OrtSession> };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly Tensor: new (type: any, data: any, dims?: readonly number[]) => OrtTensor;
}

export function toOrt(ort: OrtModule, tensor: Tensor): OrtTensor {
  return new ort.Tensor(tensor.dtype, tensor.data, tensor.shape);
}

const TYPED: Record<string, DType> = {
  float32: "float32",
  float64: "float64",
  float16: "float16",
  int64: "int64",
  int32: "int32",
  int8: "int8",
  uint8: "uint8",
  bool: "bool",
};

export function fromOrt(value: OrtTensor, where: string): Tensor {
  const dtype = TYPED[value.type];
  if (dtype === undefined) throw new TrainingError(`${where}: ONNX Runtime returned a ${value.type} tensor`);
  return { dtype, shape: [...value.dims], data: value.data as TypedArray };
}

/** A number from a scalar (or one-element) output. */
export function scalar(value: OrtTensor | undefined, where: string): number {
  const data = value?.data as ArrayLike<number | bigint> | undefined;
  if (data === undefined || data.length < 1) throw new TrainingError(`${where}: expected a scalar output`);
  return Number(data[0]);
}
