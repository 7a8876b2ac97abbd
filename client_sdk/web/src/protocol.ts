/**
 * Messages between a page and the Web Worker that runs a device (`worker.ts`).
 * Everything is structured-cloneable: tensors travel as `{dtype, shape, data}`.
 */

import type { EligibilityPolicy, DeviceState } from "./eligibility.js";
import type { SdkEvent } from "./events.js";
import type { ClientOptions, Credentials } from "./options.js";
import type { RoundResult } from "./results.js";
import type { Tensor } from "./wire.js";

export interface WorkerConfig {
  readonly serverUrl: string;
  readonly task: string;
  readonly credentials: Credentials;
  /** The IndexedDB database of this device (one per device on an origin). */
  readonly storeName: string;
  /** Where onnxruntime-web's ESM build is served (e.g. "/ort/ort.wasm.min.mjs"). */
  readonly ortUrl: string;
  /** Where its .wasm files are served (ort.env.wasm.wasmPaths), e.g. "/ort/". */
  readonly wasmPaths: string;
  readonly data: { readonly x: Tensor; readonly y: Tensor };
  readonly evalData?: { readonly x: Tensor; readonly y: Tensor };
  readonly policy?: EligibilityPolicy;
  readonly state?: Partial<DeviceState>;
  readonly options?: Partial<ClientOptions>;
  /** Seeds the client's randomness (data order, retry jitter): reproducible runs. */
  readonly seed?: number;
}

export type ToWorker =
  | { readonly type: "start"; readonly config: WorkerConfig }
  | { readonly type: "run"; readonly rounds: number | null }
  | { readonly type: "state"; readonly state: Partial<DeviceState> }
  | { readonly type: "stop" };

export type FromWorker =
  | { readonly type: "ready" }
  | { readonly type: "event"; readonly event: SdkEvent }
  | { readonly type: "result"; readonly result: RoundResult }
  | { readonly type: "error"; readonly name: string; readonly message: string }
  | { readonly type: "stopped" };
