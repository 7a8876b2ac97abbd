/**
 * Asynchronous secure aggregation, the device's side (mirrors `client_sdk/secagg.py`,
 * byte for byte: a mask, a fixed-point encoding or a sealed seed made here is what the
 * Python SDK would make, and the mask service opens it the same way).
 *
 * A device in a secure-aggregation task never uploads its delta in the clear:
 *
 * 1. it clips the delta to the task's L2 bound `clipNorm`;
 * 2. encodes it in fixed point, `q = rint(x * scale)` as integers modulo 2**32 (round
 *    half to even, as numpy's `rint`), with the `scale` that follows from the check-in's
 *    terms so no sum the server makes can wrap;
 * 3. adds a mask: the ChaCha20 keystream (RFC 8439, all-zero nonce, counter 0) of a fresh
 *    random 32-byte seed, read as little-endian uint32 words (modulo 2**32);
 * 4. seals the seed to the mask service's X25519 key: an ephemeral X25519 key,
 *    HKDF-SHA256 (salt = ephemeral public key || service key, info "asyncfl secagg seed
 *    v1"), ChaCha20-Poly1305 with `asyncfl/<task>/<session>/<update>` as associated
 *    data, so the sealed seed is good for this one update only.
 *
 * Before it seals anything, the device checks the key is the mask service's (the
 * stand-in for TEE attestation, `TrustAnchor`): pinned in the app, or signed with
 * Ed25519 by an operator key the app ships, over `"asyncfl mask service key v1:" || key`.
 *
 * Every primitive comes from the audited @noble packages (ciphers, curves, hashes);
 * nothing here is a hand-written cipher. All of it is synchronous and runs the same in
 * a page, a Web Worker and Node (randomness from `crypto.getRandomValues`).
 */

import { chacha20, chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { randomBytes } from "@noble/hashes/utils.js";

import { SdkError } from "./errors.js";
import type { Tensor } from "./wire.js";

export const ENCODING = "masked-fixed32";
export const SEED_BYTES = 32;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HKDF_INFO = utf8("asyncfl secagg seed v1");
const KEY_CONTEXT = utf8("asyncfl mask service key v1:");
// cryptography's ChaCha20(seed, 16 zero bytes) is counter 0 (4 bytes LE) + a zero
// 12-byte nonce: RFC 8439 ChaCha20 with a zero nonce from block 0. Each seed is fresh
// and masks exactly one update, so no (key, nonce) pair repeats.
const MASK_NONCE = new Uint8Array(NONCE_BYTES);

/** The secure-aggregation parameters are unusable, a key is not trusted, or a sealed
 * seed does not open. */
export class SecaggError extends SdkError {}

function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function littleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

/** Hex (as the Python SDK keeps keys in its state) to bytes. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new SecaggError("not a hex string");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

/** How a task encodes deltas (the check-in's `fixed_point`). */
export interface FixedPoint {
  readonly clipNorm: number;
  readonly maxWeight: number;
  readonly maxUpdates: number;
}

/** The largest scale at which `maxUpdates` updates, each weighted by at most
 * `maxWeight`, sum within int32 (the same float arithmetic as the Python SDK). */
export function fixedPointScale(fp: FixedPoint): number {
  const bound = fp.maxUpdates * fp.maxWeight * fp.clipNorm;
  return Math.floor((2 ** 31 - 1) / bound);
}

/** Check the parameters (as `FixedPoint.check` does); returns them. */
export function checkFixedPoint(fp: FixedPoint): FixedPoint {
  if (!(typeof fp.clipNorm === "number" && fp.clipNorm > 0 && Number.isFinite(fp.clipNorm))) {
    throw new SecaggError("clip_norm must be a positive finite number");
  }
  if (!Number.isSafeInteger(fp.maxWeight) || !Number.isSafeInteger(fp.maxUpdates) || fp.maxWeight < 1 || fp.maxUpdates < 1) {
    throw new SecaggError("max_weight and max_updates must be integers >= 1");
  }
  if (!(fixedPointScale(fp) >= 1)) throw new SecaggError("no fixed-point scale fits: lower max_updates, max_weight or clip_norm");
  return fp;
}

/** The check-in's wire form `{clip_norm, max_weight, max_updates}`. */
export function fixedPointFromWire(value: unknown): FixedPoint {
  if (typeof value !== "object" || value === null) throw new SecaggError("bad fixed-point parameters: not a map");
  const obj = value as Record<string, unknown>;
  const [clipNorm, maxWeight, maxUpdates] = [obj["clip_norm"], obj["max_weight"], obj["max_updates"]];
  if (typeof clipNorm !== "number" || typeof maxWeight !== "number" || typeof maxUpdates !== "number") {
    throw new SecaggError("bad fixed-point parameters: clip_norm, max_weight and max_updates are numbers");
  }
  return checkFixedPoint({ clipNorm, maxWeight, maxUpdates });
}

export function fixedPointToWire(fp: FixedPoint): { clip_norm: number; max_weight: number; max_updates: number } {
  return { clip_norm: fp.clipNorm, max_weight: fp.maxWeight, max_updates: fp.maxUpdates };
}

/** numpy's `rint`: round half to even (Math.round rounds half up). */
function rint(v: number): number {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Clip the delta to `fp.clipNorm` (L2, float64) and encode it as one flat uint32
 * vector (two's complement of `rint(x * scale)`). */
export function encodeFixed(delta: readonly Tensor[], fp: FixedPoint): Uint32Array {
  const scale = fixedPointScale(checkFixedPoint(fp));
  let size = 0;
  for (const t of delta) {
    if (t.dtype !== "float32" && t.dtype !== "float64") throw new SecaggError(`a ${t.dtype} delta cannot be encoded`);
    size += t.data.length;
  }
  const flat = new Float64Array(size);
  let at = 0;
  for (const t of delta) {
    flat.set(t.data as Float32Array | Float64Array, at);
    at += t.data.length;
  }
  let squares = 0;
  for (const v of flat) {
    if (!Number.isFinite(v)) throw new SecaggError("the delta holds NaN or Inf");
    squares += v * v;
  }
  const norm = Math.sqrt(squares);
  if (norm > fp.clipNorm) {
    const factor = fp.clipNorm / norm;
    for (let i = 0; i < size; i++) flat[i] = (flat[i] as number) * factor;
  }
  const out = new Uint32Array(size); // a negative integer is stored modulo 2**32
  for (let i = 0; i < size; i++) out[i] = rint((flat[i] as number) * scale);
  return out;
}

/** The mask of `seed`: `size` little-endian uint32 words of its ChaCha20 stream. */
export function expandMask(seed: Uint8Array, size: number): Uint32Array {
  if (seed.length !== SEED_BYTES) throw new SecaggError(`a seed is ${SEED_BYTES} bytes`);
  if (!littleEndian()) throw new SecaggError("big-endian hosts are not supported");
  const zeros = new Uint8Array(4 * size);
  const stream = chacha20(seed, MASK_NONCE, zeros, zeros); // in place: the keystream
  return new Uint32Array(stream.buffer, stream.byteOffset, size);
}

/** The associated data a sealed seed is bound to. */
export function seedContext(task: string, sessionId: string, updateId: string): Uint8Array {
  return utf8(`asyncfl/${task}/${sessionId}/${updateId}`);
}

/** A seed encrypted to the mask service: what the upload's `secagg` field carries. */
export interface SealedSeed {
  /** The raw X25519 public key of the ephemeral pair, 32 bytes. */
  readonly ephemeral_key: Uint8Array;
  readonly nonce: Uint8Array;
  /** The seed and its Poly1305 tag, 48 bytes. */
  readonly ciphertext: Uint8Array;
}

function aeadKey(shared: Uint8Array, ephemeral: Uint8Array, recipient: Uint8Array): Uint8Array {
  return hkdf(sha256, shared, concat(ephemeral, recipient), HKDF_INFO, 32);
}

function publicKeyBytes(key: Uint8Array, what: string): Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new SecaggError(`${what} is a raw ${KEY_BYTES}-byte key`);
  return key;
}

/** Encrypt `seed` to the mask service's raw X25519 public key `maskKey`. */
export function sealSeed(maskKey: Uint8Array, seed: Uint8Array, context: Uint8Array): SealedSeed {
  publicKeyBytes(maskKey, "the mask service key");
  const ephemeral = x25519.utils.randomSecretKey();
  const ephemeralKey = x25519.getPublicKey(ephemeral);
  let shared: Uint8Array;
  try {
    shared = x25519.getSharedSecret(ephemeral, maskKey);
  } catch (error) {
    throw new SecaggError("the mask service key is not a usable X25519 key", { cause: error });
  } finally {
    ephemeral.fill(0);
  }
  const nonce = randomBytes(NONCE_BYTES);
  const ciphertext = chacha20poly1305(aeadKey(shared, ephemeralKey, maskKey), nonce, context).encrypt(seed);
  return { ephemeral_key: ephemeralKey, nonce, ciphertext };
}

/** The mask service's side (for tests and tools): the seed, or SecaggError if it was
 * sealed for anything else (another key, another update, tampered bytes). */
export function openSeed(privateKey: Uint8Array, sealed: SealedSeed, context: Uint8Array): Uint8Array {
  const own = x25519.getPublicKey(privateKey);
  if (sealed.ephemeral_key.length !== KEY_BYTES || sealed.nonce.length !== NONCE_BYTES || sealed.ciphertext.length !== SEED_BYTES + TAG_BYTES) {
    throw new SecaggError("a sealed seed has a 32-byte key, a 12-byte nonce, 48 bytes");
  }
  try {
    const shared = x25519.getSharedSecret(privateKey, sealed.ephemeral_key);
    return chacha20poly1305(aeadKey(shared, sealed.ephemeral_key, own), sealed.nonce, context).decrypt(sealed.ciphertext);
  } catch (error) {
    throw new SecaggError("the sealed seed does not open for this update", { cause: error });
  }
}

/** Clip, encode, mask with a fresh seed and seal the seed: `{masked, sealed}`. */
export function maskUpdate(
  delta: readonly Tensor[],
  fp: FixedPoint,
  maskKey: Uint8Array,
  context: Uint8Array,
): { masked: Uint32Array; sealed: SealedSeed } {
  const masked = encodeFixed(delta, fp);
  const seed = randomBytes(SEED_BYTES);
  const mask = expandMask(seed, masked.length);
  for (let i = 0; i < masked.length; i++) masked[i] = (masked[i] as number) + (mask[i] as number); // wraps modulo 2**32
  const sealed = sealSeed(maskKey, seed, context);
  seed.fill(0);
  mask.fill(0);
  return { masked, sealed };
}

/** What an operator signs to vouch for a mask service's public key. */
export function keyMessage(maskKey: Uint8Array): Uint8Array {
  return concat(KEY_CONTEXT, maskKey);
}

/**
 * How a device knows the key it seals to is the mask service's (the stand-in for TEE
 * attestation): the service key pinned in the app, or the operator's Ed25519 public key
 * the app ships, which signed the service key (`asyncfl secagg sign`). Raw 32-byte keys,
 * as bytes or hex. A pinned key wins when both are given.
 */
export interface TrustAnchor {
  readonly maskKey?: Uint8Array | string | null;
  readonly operatorKey?: Uint8Array | string | null;
}

function anchorBytes(value: Uint8Array | string | null | undefined, what: string): Uint8Array | null {
  if (value === null || value === undefined) return null;
  return publicKeyBytes(typeof value === "string" ? fromHex(value) : value, what);
}

/** Refuse an anchor that could never verify anything (ClientOptions checks it). */
export function checkTrustAnchor(anchor: TrustAnchor): TrustAnchor {
  const pinned = anchorBytes(anchor.maskKey, "secaggTrust.maskKey");
  const operator = anchorBytes(anchor.operatorKey, "secaggTrust.operatorKey");
  if (pinned === null && operator === null) throw new SecaggError("no trust anchor: pin the mask service key or an operator key");
  return anchor;
}

/** Throw SecaggError unless `maskKey` is trusted by `anchor` (with `signature`, the
 * operator's signature the server handed out with the key, if any). */
export function verifyMaskKey(anchor: TrustAnchor, maskKey: Uint8Array, signature: Uint8Array | null): void {
  const pinned = anchorBytes(anchor.maskKey, "secaggTrust.maskKey");
  const operator = anchorBytes(anchor.operatorKey, "secaggTrust.operatorKey");
  if (pinned === null && operator === null) throw new SecaggError("no trust anchor: pin the mask service key or an operator key");
  if (pinned !== null) {
    if (maskKey.length !== pinned.length || !maskKey.every((b, i) => b === pinned[i])) {
      throw new SecaggError("the mask service key is not the pinned one");
    }
    return;
  }
  if (signature === null) throw new SecaggError("the mask service key comes without an operator signature");
  let valid = false;
  try {
    // RFC 8032 strict (not ZIP-215), as OpenSSL behind the Python SDK verifies
    valid = ed25519.verify(signature, keyMessage(maskKey), operator as Uint8Array, { zip215: false });
  } catch {
    valid = false;
  }
  if (!valid) throw new SecaggError("the mask service key is not signed by the operator");
}

/** A check-in's secure-aggregation terms, JSON-able (keys as hex) for the stored session. */
export interface SecaggTerms {
  readonly maskKey: string;
  readonly maskKeySignature: string | null;
  readonly fixedPoint: FixedPoint;
  readonly threshold: number;
}

/** Parse the check-in's `secure_aggregation` map. */
export function termsFromWire(value: unknown): SecaggTerms {
  if (typeof value !== "object" || value === null) throw new SecaggError("secure_aggregation terms are not a map");
  const obj = value as Record<string, unknown>;
  const key = obj["mask_key"];
  const signature = obj["mask_key_signature"] ?? null;
  const threshold = obj["threshold"];
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new SecaggError("secure_aggregation.mask_key is a 32-byte key");
  if (signature !== null && !(signature instanceof Uint8Array)) throw new SecaggError("secure_aggregation.mask_key_signature is bytes");
  if (typeof threshold !== "number" || !Number.isSafeInteger(threshold)) throw new SecaggError("secure_aggregation.threshold is an integer");
  return {
    maskKey: toHex(key),
    maskKeySignature: signature === null ? null : toHex(signature),
    fixedPoint: fixedPointFromWire(obj["fixed_point"]),
    threshold,
  };
}

/** Check the key against the anchor, then clip, encode, mask and seal for this update. */
export function maskForTask(
  anchor: TrustAnchor | null,
  terms: SecaggTerms,
  delta: readonly Tensor[],
  context: Uint8Array,
): { masked: Uint32Array; sealed: SealedSeed } {
  if (anchor === null) throw new SecaggError("no trust anchor for a mask service (ClientOptions.secaggTrust)");
  const key = fromHex(terms.maskKey);
  verifyMaskKey(anchor, key, terms.maskKeySignature === null ? null : fromHex(terms.maskKeySignature));
  return maskUpdate(delta, terms.fixedPoint, key, context);
}
