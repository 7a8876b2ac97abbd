/**
 * A training bundle as a device receives it: the manifest (what the graphs take and
 * return), the three ONNX graphs, and parameters as a msgpack list of wire tensors.
 * Mirrors the checks of `client_sdk/bundle.py`: every graph must hash to the digest the
 * manifest names, and parameters must match the manifest's specs one by one.
 */

import { sha256Hex } from "./digest.js";
import { BundleError, WireFormatError } from "./errors.js";
import { decodeTensors, isDType, unpack } from "./wire.js";
import type { DType, Tensor } from "./wire.js";

export const FORMAT_VERSION = 1;
export const GRAPH_NAMES = ["train_step", "eval_step", "infer"] as const;
export type GraphName = (typeof GRAPH_NAMES)[number];
export const TASK_TYPES = ["classification", "regression", "binary"] as const;

/** A graph input; `null` in `shape` is the batch dimension. */
export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly (number | null)[];
  readonly dtype: DType;
}

export interface Manifest {
  readonly formatVersion: number;
  readonly model: string;
  readonly taskType: (typeof TASK_TYPES)[number];
  readonly params: readonly TensorSpec[];
  readonly x: TensorSpec;
  readonly y: TensorSpec;
  readonly optimizer: string;
  readonly optimizerState: readonly TensorSpec[];
  readonly graphs: Readonly<Record<GraphName, string>>;
}

const SHA = /^[0-9a-f]{64}$/;

function spec(value: unknown, where: string, batch: boolean): TensorSpec {
  if (typeof value !== "object" || value === null) throw new BundleError(`manifest ${where}: expected a map`);
  const { name, shape, dtype } = value as Record<string, unknown>;
  if (typeof name !== "string" || !name) throw new BundleError(`manifest ${where}: name must be a non-empty string`);
  if (!isDType(dtype)) throw new BundleError(`manifest ${where}: unsupported dtype ${JSON.stringify(dtype)}`);
  if (!Array.isArray(shape) || !shape.every((d) => d === null || (Number.isSafeInteger(d) && d >= 0))) {
    throw new BundleError(`manifest ${where}: shape must be a list of ints >= 0 or null`);
  }
  const dims = shape as (number | null)[];
  if (batch ? dims[0] !== null || dims.slice(1).includes(null) : dims.includes(null)) {
    throw new BundleError(`manifest ${where}: ${batch ? "only the first dim may be (and must be) the batch" : "shape must be static"}`);
  }
  return { name, shape: dims, dtype };
}

function specs(value: unknown, where: string): TensorSpec[] {
  if (!Array.isArray(value)) throw new BundleError(`manifest ${where} must be a list`);
  return value.map((s, i) => spec(s, `${where}[${i}]`, false));
}

/** Parse and validate `manifest.json`; anything malformed is a BundleError. */
export function parseManifest(data: Uint8Array): Manifest {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(new TextDecoder().decode(data)) as Record<string, unknown>;
  } catch (error) {
    throw new BundleError(`manifest is not valid JSON: ${String(error)}`, { cause: error });
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new BundleError("manifest must be a JSON object");
  if (obj["format_version"] !== FORMAT_VERSION) {
    throw new BundleError(`manifest format_version ${String(obj["format_version"])} is not supported (expected ${FORMAT_VERSION})`);
  }
  const taskType = obj["task_type"];
  if (!TASK_TYPES.includes(taskType as (typeof TASK_TYPES)[number])) throw new BundleError(`manifest task_type ${String(taskType)} is unknown`);
  const graphs = obj["graphs"] as Record<string, unknown> | undefined;
  if (
    typeof graphs !== "object" ||
    graphs === null ||
    Object.keys(graphs).length !== GRAPH_NAMES.length ||
    !GRAPH_NAMES.every((g) => typeof graphs[g] === "string" && SHA.test(graphs[g] as string))
  ) {
    throw new BundleError(`manifest graphs must map ${GRAPH_NAMES.join(", ")} to sha256 hex digests`);
  }
  const manifest: Manifest = {
    formatVersion: FORMAT_VERSION,
    model: String(obj["model"] ?? ""),
    taskType: taskType as Manifest["taskType"],
    params: specs(obj["params"], "params"),
    x: spec(obj["x"], "x", true),
    y: spec(obj["y"], "y", true),
    optimizer: String(obj["optimizer"] ?? ""),
    optimizerState: specs(obj["optimizer_state"], "optimizer_state"),
    graphs: graphs as Record<GraphName, string>,
  };
  const names = [...manifest.params, ...manifest.optimizerState].map((s) => s.name);
  if (new Set(names).size !== names.length || names.some((n) => n === "x" || n === "y" || n === "lr")) {
    throw new BundleError("manifest: parameter and state names must be unique");
  }
  return manifest;
}

/** Describe how `tensors` differ from `specs` (count, dtype, shape), or null. */
export function paramsMismatch(tensors: readonly Tensor[], wanted: readonly TensorSpec[]): string | null {
  if (tensors.length !== wanted.length) return `expected ${wanted.length} parameter tensors, got ${tensors.length}`;
  for (let i = 0; i < wanted.length; i++) {
    const s = wanted[i]!;
    const t = tensors[i]!;
    if (t.dtype !== s.dtype || t.shape.length !== s.shape.length || !s.shape.every((d, j) => d === null || d === t.shape[j])) {
      return `parameter ${s.name}: expected ${s.dtype}[${s.shape.join(", ")}], got ${t.dtype}[${t.shape.join(", ")}]`;
    }
  }
  return null;
}

/** Decode a parameters body and check it against `wanted`. */
export function decodeParams(data: Uint8Array, wanted: readonly TensorSpec[]): Tensor[] {
  let tensors: Tensor[];
  try {
    tensors = decodeTensors(unpack(data), "params");
  } catch (error) {
    if (error instanceof WireFormatError) throw new BundleError(`parameters are not valid wire tensors: ${error.message}`, { cause: error });
    throw error;
  }
  const problem = paramsMismatch(tensors, wanted);
  if (problem !== null) throw new BundleError(problem);
  return tensors;
}

/** A verified bundle in memory: manifest and graph bytes. */
export interface Bundle {
  readonly manifest: Manifest;
  readonly graphs: Readonly<Record<GraphName, Uint8Array>>;
}

/** Build a bundle from downloaded bytes, verifying every graph's sha256. */
export async function bundleFromParts(manifest: Uint8Array, graphs: Readonly<Record<string, Uint8Array>>): Promise<Bundle> {
  const parsed = parseManifest(manifest);
  const out: Partial<Record<GraphName, Uint8Array>> = {};
  for (const name of GRAPH_NAMES) {
    const body = graphs[name];
    if (body === undefined) throw new BundleError(`bundle is missing graph ${name}`);
    const digest = await sha256Hex(body);
    if (digest !== parsed.graphs[name]) throw new BundleError(`${name}.onnx sha256 mismatch: manifest says ${parsed.graphs[name]}, got ${digest}`);
    out[name] = body;
  }
  return { manifest: parsed, graphs: out as Record<GraphName, Uint8Array> };
}
