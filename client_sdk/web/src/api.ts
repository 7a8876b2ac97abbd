/**
 * The v1 device API as typed calls over a Transport (mirrors `client_sdk/api.py`).
 *
 * Every call goes through a Retrier. Error answers become ServerError with the server's
 * stable `code` and its `Retry-After`; malformed answers become WireFormatError. The
 * plain upload body comes from an UpdateEncoder; a secure-aggregation task's body (a
 * masked uint32 vector and a sealed seed, `secagg.ts`) from `encodeMaskedUpdate`.
 */

import { ServerError, WireFormatError } from "./errors.js";
import { Retrier } from "./retry.js";
import { ENCODING as MASKED, SecaggError, termsFromWire } from "./secagg.js";
import type { SealedSeed, SecaggTerms } from "./secagg.js";
import type { Response, Transport } from "./transport.js";
import { CONTENT_TYPE, encodeTensors, pack, unpack } from "./wire.js";
import type { Tensor } from "./wire.js";

const HEADERS = { "Content-Type": CONTENT_TYPE, Accept: CONTENT_TYPE } as const;

/** The fields an update body carries (server/updates.py refuses anything else). */
export const UPDATE_FIELDS: readonly string[] = ["session", "base_version", "num_examples", "encoding", "tensors", "metrics"];
/** A masked (secure-aggregation) update body's fields: the plain ones and the sealed seed. */
export const MASKED_UPDATE_FIELDS: readonly string[] = [...UPDATE_FIELDS, "secagg"];

/** The server's training plan, as sent in the check-in answer. */
export interface PlanDoc {
  readonly lr: number;
  readonly batch_size: number;
  readonly epochs?: number | null;
  readonly max_steps?: number | null;
  readonly time_budget_s?: number | null;
}

/** The check-in answer; `evaluate`: report federated evaluation of `version`. */
export type Checkin =
  | { readonly admitted: false; readonly retryAfter: number; readonly reason: string }
  | {
      readonly admitted: true;
      readonly session: string;
      readonly sessionId: string;
      readonly version: number;
      readonly deadlineS: number;
      readonly plan: PlanDoc;
      readonly artifacts: Readonly<Record<string, string>>;
      readonly paramsUrl: string;
      readonly evaluate: boolean;
      readonly train: boolean;
      /** Set when the task takes masked updates (`encoding: "masked-fixed32"`). */
      readonly secureAggregation: SecaggTerms | null;
    };

/** A GET answer: `body` is null when the server said 304 (our copy is current). */
export interface Fetched {
  readonly body: Uint8Array | null;
  readonly etag: string | null;
  readonly cacheControl: string;
}

/** What an update carries before it is encoded. */
export interface Update {
  readonly session: string;
  readonly baseVersion: number;
  readonly numExamples: number;
  readonly delta: readonly Tensor[];
  readonly metrics: Readonly<Record<string, number>>;
}

/** Turns an update into the upload body. */
export interface UpdateEncoder {
  readonly encoding: string;
  encode(update: Update): Uint8Array;
}

/** The plain encoding: float32 deltas as wire tensors. */
export const float32Encoder: UpdateEncoder = {
  encoding: "float32",
  encode(update: Update): Uint8Array {
    for (const t of update.delta) {
      if (t.dtype !== "float32") throw new WireFormatError(`the float32 encoding got a ${t.dtype} delta`);
    }
    return pack({
      session: update.session,
      base_version: update.baseVersion,
      num_examples: update.numExamples,
      encoding: "float32",
      tensors: encodeTensors(update.delta),
      metrics: { ...update.metrics },
    });
  },
};

/** The secure-aggregation body: one flat masked uint32 tensor and the sealed seed. */
export function encodeMaskedUpdate(update: Omit<Update, "delta">, masked: Uint32Array, sealed: SealedSeed): Uint8Array {
  return pack({
    session: update.session,
    base_version: update.baseVersion,
    num_examples: update.numExamples,
    encoding: MASKED,
    tensors: encodeTensors([{ dtype: "uint32", shape: [masked.length], data: masked }]),
    secagg: { ephemeral_key: sealed.ephemeral_key, nonce: sealed.nonce, ciphertext: sealed.ciphertext },
    metrics: { ...update.metrics },
  });
}

/** The check-in's encoding: plain (null) or the secure-aggregation terms. */
function secureTerms(obj: Record<string, unknown>): SecaggTerms | null {
  const encoding = obj["encoding"] ?? "float32";
  if (encoding === "float32") return null;
  if (encoding !== MASKED) throw new WireFormatError(`check-in answer: this SDK cannot encode updates as ${JSON.stringify(encoding)}`);
  try {
    return termsFromWire(obj["secure_aggregation"]);
  } catch (error) {
    if (error instanceof SecaggError) throw new WireFormatError(`check-in answer: ${error.message}`, { cause: error });
    throw error;
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function field<T>(obj: Record<string, unknown>, key: string, check: (v: unknown) => v is T, what: string): T {
  const value = obj[key];
  if (!check(value)) throw new WireFormatError(`check-in answer: ${key} must be ${what}`);
  return value;
}

const isString = (v: unknown): v is string => typeof v === "string";
const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** Parse a check-in answer (exported for tests). */
export function parseCheckin(obj: unknown): Checkin {
  if (!isRecord(obj)) throw new WireFormatError("check-in answer is not a map");
  if (!obj["admitted"]) {
    const retry = obj["retry_after"];
    const reason = obj["reason"];
    return { admitted: false, retryAfter: isNumber(retry) ? retry : 1, reason: isString(reason) && reason ? reason : "no_slot" };
  }
  const plan = field(obj, "plan", isRecord, "a map");
  if (!isNumber(plan["lr"]) || !isNumber(plan["batch_size"])) {
    throw new WireFormatError("check-in answer: plan needs numbers lr and batch_size");
  }
  const artifacts = field(obj, "artifacts", isRecord, "a map");
  if (!Object.values(artifacts).every(isString)) throw new WireFormatError("check-in answer: artifacts must map names to digests");
  const params = field(obj, "params", isRecord, "a map");
  return {
    admitted: true,
    session: field(obj, "session", isString, "a string"),
    sessionId: field(obj, "session_id", isString, "a string"),
    version: field(obj, "version", isNumber, "a number"),
    deadlineS: field(obj, "deadline_s", isNumber, "a number"),
    plan: plan as unknown as PlanDoc,
    artifacts: artifacts as Record<string, string>,
    paramsUrl: field(params, "url", isString, "a string"),
    evaluate: Boolean(obj["evaluate"] ?? false),
    train: Boolean(obj["train"] ?? true),
    secureAggregation: secureTerms(obj),
  };
}

export class ServerApi {
  constructor(
    readonly transport: Transport,
    readonly retrier: Retrier = new Retrier(),
    readonly encoder: UpdateEncoder = float32Encoder,
  ) {}

  async enroll(enrollmentKey: string, deviceInfo: Readonly<Record<string, unknown>>): Promise<{ deviceId: string; deviceToken: string }> {
    const obj = await this.call("POST", "/v1/devices/enroll", { enrollment_key: enrollmentKey, device_info: { ...deviceInfo } });
    const deviceId = obj["device_id"];
    const deviceToken = obj["device_token"];
    if (!isString(deviceId) || !isString(deviceToken)) throw new WireFormatError("enrollment answer has no device_id or device_token");
    return { deviceId, deviceToken };
  }

  async checkin(task: string, token: string, info: Readonly<Record<string, unknown>>): Promise<Checkin> {
    return parseCheckin(await this.call("POST", `/v1/tasks/${encodeURIComponent(task)}/checkin`, info, token));
  }

  async fetch(path: string, token: string, etag: string | null = null): Promise<Fetched> {
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (etag) headers["If-None-Match"] = etag;
    return this.retrier.call(`GET ${path}`, async () => {
      const resp = await this.transport.request("GET", path, { headers });
      const cacheControl = resp.headers.get("cache-control") ?? "";
      if (resp.status === 304) return { body: null, etag: resp.headers.get("etag") ?? etag, cacheControl };
      raiseForError(resp);
      return { body: resp.body, etag: resp.headers.get("etag") ?? null, cacheControl };
    });
  }

  /** Send an update body; retries are safe: the session makes the upload idempotent. */
  async upload(task: string, body: Uint8Array): Promise<Record<string, unknown>> {
    const path = `/v1/tasks/${encodeURIComponent(task)}/updates`;
    return this.retrier.call(`POST ${path}`, async () => decodeAnswer(await this.transport.request("POST", path, { body, headers: HEADERS })));
  }

  /** Report federated-evaluation metrics of `version` for a session. */
  async reportEvaluation(task: string, session: string, version: number, metrics: Readonly<Record<string, number>>): Promise<Record<string, unknown>> {
    return this.call("POST", `/v1/tasks/${encodeURIComponent(task)}/evaluations`, { session, version, metrics: { ...metrics } });
  }

  /** Give the session's concurrency slot back (it will not upload). */
  async releaseSession(task: string, session: string): Promise<void> {
    const resp = await this.transport.request("POST", `/v1/tasks/${encodeURIComponent(task)}/sessions/release`, {
      body: pack({ session }),
      headers: HEADERS,
    });
    raiseForError(resp);
  }

  private async call(method: string, path: string, payload: unknown, token?: string): Promise<Record<string, unknown>> {
    const headers: Record<string, string> = { ...HEADERS };
    if (token) headers["Authorization"] = `Bearer ${token}`;
    const body = pack(payload);
    return this.retrier.call(`${method} ${path}`, async () => decodeAnswer(await this.transport.request(method, path, { body, headers })));
  }
}

function decodeAnswer(resp: Response): Record<string, unknown> {
  raiseForError(resp);
  const obj = unpack(resp.body);
  if (!isRecord(obj)) throw new WireFormatError("server answer is not a map");
  return obj;
}

/** Throw ServerError for a 4xx/5xx answer, with the error document's code if it has one. */
export function raiseForError(resp: Response): void {
  if (resp.status < 400) return;
  let code = "http_error";
  let message = new TextDecoder().decode(resp.body.subarray(0, 200));
  try {
    const type = resp.headers.get("content-type") ?? "";
    const doc: unknown = type.includes("json") ? JSON.parse(new TextDecoder().decode(resp.body)) : unpack(resp.body);
    const error = isRecord(doc) ? doc["error"] : undefined;
    if (isRecord(error) && isString(error["code"])) {
      code = error["code"];
      message = String(error["message"] ?? "");
    }
  } catch {
    // not an error document: keep the generic code and the start of the body
  }
  throw new ServerError(resp.status, code, message, parseRetryAfter(resp.headers.get("retry-after") ?? null));
}

/** Seconds from a `Retry-After` header: delta-seconds or an HTTP date. */
export function parseRetryAfter(raw: string | null, now: number = Date.now() / 1000): number | null {
  if (raw === null) return null;
  const text = raw.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when) || !/[a-z]/i.test(text)) return null;
  return Math.max(0, when / 1000 - now);
}
