/**
 * asyncfl-web: the asyncfl device SDK for browsers and Node, on stock ONNX Runtime.
 *
 * This entry is runtime-neutral (no ONNX Runtime, no Node or DOM APIs beyond fetch and
 * WebCrypto). `asyncfl-web/node` wires onnxruntime-node and a folder store;
 * `asyncfl-web/browser` wires onnxruntime-web, IndexedDB and a Web Worker.
 */

export { MASKED_UPDATE_FIELDS, ServerApi, UPDATE_FIELDS, encodeMaskedUpdate, float32Encoder, parseCheckin, parseRetryAfter, raiseForError } from "./api.js";
export type { Checkin, Fetched, PlanDoc, Update, UpdateEncoder } from "./api.js";
export { ArtifactStore } from "./artifacts.js";
export type { Traffic } from "./artifacts.js";
export { GRAPH_NAMES, bundleFromParts, decodeParams, paramsMismatch, parseManifest } from "./bundle.js";
export type { Bundle, GraphName, Manifest, TensorSpec } from "./bundle.js";
export { HttpCache, expiry, isFresh } from "./cache.js";
export type { CacheEntry } from "./cache.js";
export { Client } from "./client.js";
export type { ClientConfig, RunForever } from "./client.js";
export { ArrayDataSource, permutation, seededRandom, takeRows } from "./data.js";
export type { Batch, DataSource } from "./data.js";
export { sha256Hex } from "./digest.js";
export { ALWAYS, DEFAULT_POLICY, ManualDeviceState, UNKNOWN_STATE, ineligibleReasons } from "./eligibility.js";
export type { DeviceState, DeviceStateProvider, EligibilityPolicy } from "./eligibility.js";
export {
  BundleError,
  ConfigError,
  SdkError,
  ServerError,
  StorageError,
  TrainingError,
  TransportError,
  WireFormatError,
} from "./errors.js";
export type { EventCallback, EventKind, SdkEvent } from "./events.js";
export { DEFAULT_OPTIONS, resolveOptions } from "./options.js";
export type { ClientOptions, Credentials } from "./options.js";
export type { OrtModule, OrtSession, OrtTensor } from "./ort.js";
export { planFrom } from "./plan.js";
export type { TrainPlan } from "./plan.js";
export { clipByGlobalNorm, globalNorm } from "./privacy.js";
export type { Evaluated, NoSlot, NotEligible, Rejected, RoundResult, Trained } from "./results.js";
export { DEFAULT_RETRY, NO_RETRY, Retrier, backoff, isRetryable } from "./retry.js";
export type { RetryPolicy, Sleep } from "./retry.js";
export {
  ENCODING,
  SEED_BYTES,
  SecaggError,
  checkTrustAnchor,
  encodeFixed,
  expandMask,
  fixedPointFromWire,
  fixedPointScale,
  fixedPointToWire,
  fromHex,
  keyMessage,
  maskForTask,
  maskUpdate,
  openSeed,
  sealSeed,
  seedContext,
  termsFromWire,
  toHex,
  verifyMaskKey,
} from "./secagg.js";
export type { FixedPoint, SealedSeed, SecaggTerms, TrustAnchor } from "./secagg.js";
export { ClientState } from "./state.js";
export type { DeviceCredentials, PendingSession } from "./state.js";
export { MemoryStore } from "./store.js";
export type { Store } from "./store.js";
export { Trainer } from "./trainer.js";
export type { EvalResult, TrainResult } from "./trainer.js";
export { FetchTransport } from "./transport.js";
export type { Response, Transport } from "./transport.js";
export { SDK_VERSION } from "./version.js";
export { CONTENT_TYPE, decodeTensor, decodeTensors, encodeTensor, encodeTensors, numel, pack, unpack, zeros } from "./wire.js";
export type { DType, Tensor, TypedArray } from "./wire.js";
