// Secure aggregation on the device: masks cancel exactly modulo 2**32, a sealed seed
// opens only for its own update, trust anchors refuse what they should, the check-in's
// terms and the masked body follow the protocol. (The cross-language checks against the
// Python SDK and the real mask service are in tests/web/test_secagg_vectors.py.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { ed25519, x25519 } from "@noble/curves/ed25519.js";

import {
  ConfigError,
  MASKED_UPDATE_FIELDS,
  SecaggError,
  WireFormatError,
  encodeFixed,
  encodeMaskedUpdate,
  expandMask,
  fixedPointScale,
  keyMessage,
  maskUpdate,
  openSeed,
  parseCheckin,
  resolveOptions,
  sealSeed,
  seedContext,
  seededRandom,
  termsFromWire,
  unpack,
  verifyMaskKey,
} from "../../dist/esm/index.js";

const FP = { clipNorm: 5, maxWeight: 4096, maxUpdates: 6 };

function delta(random, size, spread) {
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = (random() - 0.5) * 2 * spread;
  return [{ dtype: "float32", shape: [size], data }];
}

function serviceKeys() {
  const secret = x25519.utils.randomSecretKey();
  return { secret, public: x25519.getPublicKey(secret) };
}

const asInt = (u32) => Array.from(new Int32Array(u32.buffer, u32.byteOffset, u32.length));

test("the scale keeps the largest possible sum inside int32", () => {
  for (const fp of [FP, { clipNorm: 1, maxWeight: 1, maxUpdates: 1 }, { clipNorm: 0.3, maxWeight: 64, maxUpdates: 1000 }]) {
    const scale = fixedPointScale(fp);
    assert.ok(fp.maxUpdates * fp.maxWeight * fp.clipNorm * scale <= 2 ** 31 - 1);
    assert.ok(fp.maxUpdates * fp.maxWeight * fp.clipNorm * (scale + 1) > 2 ** 31 - 1);
  }
  assert.throws(() => encodeFixed(delta(Math.random, 3, 1), { clipNorm: 1e12, maxWeight: 4096, maxUpdates: 6 }), SecaggError);
  assert.throws(() => encodeFixed(delta(Math.random, 3, 1), { clipNorm: 0, maxWeight: 1, maxUpdates: 1 }), SecaggError);
});

test("encoding clips to the bound, rounds half to even and refuses NaN", () => {
  const fp = { clipNorm: 1, maxWeight: 1, maxUpdates: 2_096_000 }; // scale 1024
  assert.equal(fixedPointScale(fp), 1024);
  const ties = [{ dtype: "float32", shape: [4], data: new Float32Array([0.5, 1.5, -0.5, -1.5].map((v) => v / 1024)) }];
  assert.deepEqual(asInt(encodeFixed(ties, fp)), [0, 2, 0, -2]);
  const big = delta(seededRandom(1), 1000, 10);
  const words = asInt(encodeFixed(big, FP));
  const norm = Math.sqrt(words.reduce((s, w) => s + w * w, 0)) / fixedPointScale(FP);
  assert.ok(Math.abs(norm - FP.clipNorm) < 1e-3, `clipped norm ${norm}`);
  const bad = [{ dtype: "float32", shape: [2], data: new Float32Array([1, NaN]) }];
  assert.throws(() => encodeFixed(bad, FP), /NaN or Inf/);
});

test("the weighted sum of masked updates minus the weighted sum of masks is the encoded sum", () => {
  const random = seededRandom(2);
  const size = 333; // not a whole number of ChaCha20 blocks
  const weights = [1, 4096, 17, 300, 2];
  const total = new Uint32Array(size);
  const masks = new Uint32Array(size);
  const sum = new Array(size).fill(0);
  weights.forEach((w, i) => {
    const encoded = encodeFixed(delta(random, size, 0.01), FP);
    const mask = expandMask(new Uint8Array(32).fill(i + 1), size);
    const signed = new Int32Array(encoded.buffer);
    for (let j = 0; j < size; j++) {
      total[j] += Math.imul((encoded[j] + mask[j]) >>> 0, w); // what the server folds
      masks[j] += Math.imul(mask[j], w); // what the mask service releases
      sum[j] += w * signed[j];
    }
  });
  const unmasked = new Uint32Array(size).map((_, j) => total[j] - masks[j]);
  assert.deepEqual(asInt(unmasked), sum);
});

test("a masked update says nothing: its words are uniform, not small", () => {
  const { public: key } = serviceKeys();
  const d = delta(seededRandom(5), 2000, 0.01);
  const { masked, sealed } = maskUpdate(d, FP, key, seedContext("t", "s", "s"));
  const small = asInt(masked).filter((v) => Math.abs(v) < 2 ** 30).length / masked.length;
  assert.ok(small > 0.4 && small < 0.6, `share of small words ${small}`);
  assert.ok(asInt(encodeFixed(d, FP)).every((v) => Math.abs(v) < 2 ** 30));
  assert.equal(sealed.ciphertext.length, 48);
});

test("a sealed seed opens for its own update only", () => {
  const { secret, public: key } = serviceKeys();
  const seed = new Uint8Array(32).fill(7);
  const context = seedContext("t", "s1", "s1");
  const sealed = sealSeed(key, seed, context);
  assert.deepEqual(openSeed(secret, sealed, context), seed);
  assert.throws(() => openSeed(secret, sealed, seedContext("t", "s2", "s2")), SecaggError);
  assert.throws(() => openSeed(serviceKeys().secret, sealed, context), SecaggError);
  const flipped = { ...sealed, ciphertext: sealed.ciphertext.map((b, i) => (i === 0 ? b ^ 1 : b)) };
  assert.throws(() => openSeed(secret, flipped, context), SecaggError);
  const again = sealSeed(key, seed, context);
  assert.notDeepEqual(again.ephemeral_key, sealed.ephemeral_key); // fresh ephemeral key and nonce
  assert.throws(() => sealSeed(new Uint8Array(31), seed, context), SecaggError);
});

test("a trust anchor accepts the pinned or operator-signed key and nothing else", () => {
  const key = serviceKeys().public;
  const other = serviceKeys().public;
  const operator = ed25519.utils.randomSecretKey();
  const operatorKey = ed25519.getPublicKey(operator);
  const signature = ed25519.sign(keyMessage(key), operator);
  verifyMaskKey({ maskKey: key }, key, null);
  verifyMaskKey({ operatorKey }, key, signature);
  verifyMaskKey({ operatorKey: Buffer.from(operatorKey).toString("hex") }, key, signature);
  assert.throws(() => verifyMaskKey({ maskKey: key }, other, null), /not the pinned one/);
  assert.throws(() => verifyMaskKey({ operatorKey }, other, signature), /not signed by the operator/);
  assert.throws(() => verifyMaskKey({ operatorKey }, key, ed25519.sign(key, operator)), /not signed by the operator/);
  assert.throws(() => verifyMaskKey({ operatorKey }, key, null), /without an operator signature/);
  assert.throws(() => verifyMaskKey({}, key, signature), /no trust anchor/);
});

test("a trust anchor that could never verify is a configuration error", () => {
  assert.throws(() => resolveOptions({ secaggTrust: {} }), ConfigError);
  assert.throws(() => resolveOptions({ secaggTrust: { maskKey: "abcd" } }), ConfigError);
  assert.throws(() => resolveOptions({ secaggTrust: { operatorKey: "zz".repeat(32) } }), ConfigError);
  assert.equal(resolveOptions({ secaggTrust: { maskKey: "ab".repeat(32) } }).secaggTrust.maskKey, "ab".repeat(32));
  assert.equal(resolveOptions({}).secaggTrust, null);
});

const ADMITTED = {
  admitted: true,
  session: "tok",
  session_id: "sid",
  version: 3,
  deadline_s: 240,
  plan: { lr: 0.1, batch_size: 16 },
  artifacts: {},
  params: { url: "/p" },
};
const TERMS = {
  mask_key: new Uint8Array(32).fill(9),
  mask_key_signature: new Uint8Array(64).fill(1),
  fixed_point: { clip_norm: 5, max_weight: 4096, max_updates: 6 },
  threshold: 3,
};

test("a check-in's encoding is plain, or masked with terms; anything else is refused", () => {
  assert.equal(parseCheckin(ADMITTED).secureAggregation, null);
  assert.equal(parseCheckin({ ...ADMITTED, encoding: "float32" }).secureAggregation, null);
  const terms = parseCheckin({ ...ADMITTED, encoding: "masked-fixed32", secure_aggregation: TERMS }).secureAggregation;
  assert.deepEqual(terms, { maskKey: "09".repeat(32), maskKeySignature: "01".repeat(64), fixedPoint: FP, threshold: 3 });
  assert.deepEqual(termsFromWire({ ...TERMS, mask_key_signature: null }).maskKeySignature, null);
  assert.throws(() => parseCheckin({ ...ADMITTED, encoding: "int8" }), WireFormatError);
  assert.throws(() => parseCheckin({ ...ADMITTED, encoding: "masked-fixed32" }), WireFormatError);
  assert.throws(() => parseCheckin({ ...ADMITTED, encoding: "masked-fixed32", secure_aggregation: { ...TERMS, mask_key: new Uint8Array(31) } }), WireFormatError);
  assert.throws(() => parseCheckin({ ...ADMITTED, encoding: "masked-fixed32", secure_aggregation: { ...TERMS, fixed_point: { clip_norm: -1, max_weight: 1, max_updates: 1 } } }), WireFormatError);
});

test("the masked body carries one uint32 tensor and the sealed seed, nothing in the clear", () => {
  const { public: key } = serviceKeys();
  const d = delta(seededRandom(4), 650, 0.01);
  const { masked, sealed } = maskUpdate(d, FP, key, seedContext("t", "sid", "sid"));
  const body = unpack(encodeMaskedUpdate({ session: "tok", baseVersion: 3, numExamples: 40, metrics: { loss: 1 } }, masked, sealed));
  assert.deepEqual(Object.keys(body).sort(), [...MASKED_UPDATE_FIELDS].sort());
  assert.equal(body.encoding, "masked-fixed32");
  assert.deepEqual(body.tensors.map((t) => [t.dtype, t.shape]), [["uint32", [650]]]);
  assert.equal(body.tensors[0].data.length, 4 * 650);
  assert.deepEqual(Object.keys(body.secagg).sort(), ["ciphertext", "ephemeral_key", "nonce"]);
  assert.deepEqual([body.secagg.ephemeral_key.length, body.secagg.nonce.length, body.secagg.ciphertext.length], [32, 12, 48]);
});
