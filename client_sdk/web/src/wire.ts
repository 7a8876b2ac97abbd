/**
 * The asyncfl wire format: MessagePack bodies, tensors as `{dtype, shape, data}`.
 *
 * A tensor is a map `{"dtype": "float32", "shape": [...], "data": <bin>}` with the data
 * little-endian in row-major order (what numpy's `tobytes()` gives). Decoding checks
 * that `data` holds exactly `prod(shape) * itemsize` bytes before anything reads it, and
 * copies it into an aligned typed array (a msgpack `bin` may start at any offset).
 */

import { decode, encode } from "@msgpack/msgpack";

import { WireFormatError } from "./errors.js";

export const CONTENT_TYPE = "application/msgpack";
export const MAX_RANK = 8;

export type DType =
  | "float32"
  | "float64"
  | "float16"
  | "int64"
  | "int32"
  | "uint32"
  | "int8"
  | "uint8"
  | "bool";

export type TypedArray =
  | Float32Array
  | Float64Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Uint32Array
  | Int8Array
  | Uint8Array;

/** A tensor in memory: `data` holds `prod(shape)` elements of `dtype`. */
export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: TypedArray;
}

type ArrayCtor = { new (buffer: ArrayBuffer): TypedArray; new (length: number): TypedArray };

const DTYPES: Record<DType, { size: number; array: ArrayCtor }> = {
  float32: { size: 4, array: Float32Array as unknown as ArrayCtor },
  float64: { size: 8, array: Float64Array as unknown as ArrayCtor },
  float16: { size: 2, array: Uint16Array as unknown as ArrayCtor }, // raw halves
  int64: { size: 8, array: BigInt64Array as unknown as ArrayCtor },
  int32: { size: 4, array: Int32Array as unknown as ArrayCtor },
  uint32: { size: 4, array: Uint32Array as unknown as ArrayCtor }, // masked fixed point
  int8: { size: 1, array: Int8Array as unknown as ArrayCtor },
  uint8: { size: 1, array: Uint8Array as unknown as ArrayCtor },
  bool: { size: 1, array: Uint8Array as unknown as ArrayCtor },
};

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && Object.hasOwn(DTYPES, value);
}

export function itemSize(dtype: DType): number {
  return DTYPES[dtype].size;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A zero-filled tensor. */
export function zeros(dtype: DType, shape: readonly number[]): Tensor {
  return { dtype, shape: [...shape], data: new DTYPES[dtype].array(numel(shape)) };
}

/** Serialise to MessagePack (bin for byte arrays, str for text). */
export function pack(value: unknown): Uint8Array {
  return encode(value);
}

/** Parse a MessagePack body; any malformation becomes a WireFormatError. */
export function unpack(body: Uint8Array): unknown {
  try {
    return decode(body);
  } catch (error) {
    throw new WireFormatError(`body is not valid msgpack: ${String(error)}`, { cause: error });
  }
}

function littleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

/** The tensor as its wire map (the data bytes are a view, not a copy). */
export function encodeTensor(tensor: Tensor): { dtype: DType; shape: number[]; data: Uint8Array } {
  const expected = numel(tensor.shape);
  if (tensor.data.length !== expected) {
    throw new WireFormatError(
      `tensor of shape [${tensor.shape.join(", ")}] needs ${expected} elements, has ${tensor.data.length}`,
    );
  }
  if (!littleEndian()) throw new WireFormatError("big-endian hosts are not supported");
  const data = new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  return { dtype: tensor.dtype, shape: [...tensor.shape], data };
}

export function encodeTensors(tensors: readonly Tensor[]): ReturnType<typeof encodeTensor>[] {
  return tensors.map(encodeTensor);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/** Decode a wire tensor, validating every field. */
export function decodeTensor(value: unknown, where = "tensor"): Tensor {
  if (!isRecord(value)) throw new WireFormatError(`${where}: expected a map with dtype, shape and data`);
  const { dtype, shape, data } = value;
  if (!isDType(dtype)) throw new WireFormatError(`${where}: unsupported dtype ${JSON.stringify(dtype)}`);
  if (
    !Array.isArray(shape) ||
    shape.length > MAX_RANK ||
    !shape.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)
  ) {
    throw new WireFormatError(`${where}: shape must be a list of at most ${MAX_RANK} ints >= 0`);
  }
  if (!(data instanceof Uint8Array)) throw new WireFormatError(`${where}: data must be msgpack bin`);
  const dims = shape as number[];
  const count = numel(dims);
  const expected = count * itemSize(dtype);
  if (!Number.isSafeInteger(expected) || data.byteLength !== expected) {
    throw new WireFormatError(
      `${where}: data has ${data.byteLength} bytes, shape [${dims.join(", ")}] of ${dtype} needs ${expected}`,
    );
  }
  if (!littleEndian()) throw new WireFormatError("big-endian hosts are not supported");
  const copy = new Uint8Array(data.byteLength); // aligned and owned (a Node Buffer's slice is a view)
  copy.set(data);
  return { dtype, shape: dims, data: new DTYPES[dtype].array(copy.buffer) };
}

export function decodeTensors(value: unknown, where = "tensors"): Tensor[] {
  if (!Array.isArray(value)) throw new WireFormatError(`${where}: expected a list of tensors`);
  return value.map((t, i) => decodeTensor(t, `${where}[${i}]`));
}
