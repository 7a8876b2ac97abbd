// Device cost of secure aggregation in the web SDK (Node; run `npm run build` first):
//   node scripts/bench-secagg.mjs [--repeats 5]
// For 100k and 1M parameters, one JSON line each: the median ms to build the masked
// upload body (check the key, clip, encode, expand the ChaCha20 mask, seal the seed,
// msgpack) and its parts, beside the plain float32 body measured in the same run
// (ratio = masked / plain), and the bytes of both bodies. Each figure is the median of
// `repeats` runs after one untimed warm-up.
import { performance } from "node:perf_hooks";

import { ed25519, x25519 } from "@noble/curves/ed25519.js";

import {
  encodeFixed,
  encodeMaskedUpdate,
  expandMask,
  float32Encoder,
  keyMessage,
  maskForTask,
  sealSeed,
  seedContext,
  seededRandom,
  toHex,
} from "../dist/esm/index.js";

const at = process.argv.indexOf("--repeats");
const repeats = at > 0 ? Number(process.argv[at + 1]) : 11;
const FP = { clipNorm: 5, maxWeight: 4096, maxUpdates: 20 };
const maskKey = x25519.getPublicKey(x25519.utils.randomSecretKey());
const operator = ed25519.utils.randomSecretKey();
const terms = { maskKey: toHex(maskKey), maskKeySignature: toHex(ed25519.sign(keyMessage(maskKey), operator)), fixedPoint: FP, threshold: 10 };
const anchor = { operatorKey: ed25519.getPublicKey(operator) };

function median(fn) {
  const times = [];
  let out = fn(); // warm-up (JIT, noble's precomputed tables), not timed
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    out = fn();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return [times[Math.floor(times.length / 2)], out];
}

const round = (v) => Math.round(v * 1000) / 1000;

for (const size of [100_000, 1_000_000]) {
  const random = seededRandom(size);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = (random() - 0.5) * 0.02;
  const delta = [{ dtype: "float32", shape: [size], data }];
  const update = { session: "s".repeat(200), baseVersion: 1, numExamples: 32, delta, metrics: { loss: 1 } };
  const context = seedContext("task", "session-id", "session-id");
  const [plainMs, plainBody] = median(() => float32Encoder.encode(update));
  const [encodeMs] = median(() => encodeFixed(delta, FP));
  const [expandMs] = median(() => expandMask(new Uint8Array(32).fill(1), size));
  const [sealMs] = median(() => sealSeed(maskKey, new Uint8Array(32), context));
  const [maskedMs, body] = median(() => {
    const { masked, sealed } = maskForTask(anchor, terms, delta, context);
    return encodeMaskedUpdate(update, masked, sealed);
  });
  process.stdout.write(
    `${JSON.stringify({
      bench: "web_secagg_device",
      runtime: `node ${process.version}`,
      params: size,
      masked_body_ms: round(maskedMs),
      plain_body_ms: round(plainMs),
      ratio: round(maskedMs / plainMs),
      clip_encode_ms: round(encodeMs),
      expand_mask_ms: round(expandMs),
      seal_seed_ms: round(sealMs),
      masked_bytes: body.byteLength,
      plain_bytes: plainBody.byteLength,
      repeats,
    })}\n`,
  );
}
