// Secure-aggregation harness: `node secagg.mjs JOBS.msgpack` runs the web SDK's
// secagg.ts on each job and writes a msgpack list of answers to stdout, for the Python
// tests (tests/web/test_secagg_vectors.py) that check them against client_sdk.secagg and
// the real mask service. A job is {op, ...}:
//   scale  {fixed_point}                        -> {scale}
//   expand {seed, size}                         -> {mask: bytes (uint32 LE)}
//   encode {tensors, fixed_point}               -> {encoded: bytes (uint32 LE)}
//   seal   {mask_key, seed, context}            -> {sealed}
//   open   {private_key, sealed, context}       -> {seed}
//   mask   {tensors, fixed_point, mask_key, context, anchor?, signature?}
//                                               -> {masked: bytes, sealed}
//   verify {anchor, mask_key, signature}        -> {}
// A refused job answers {error: name, message}.
import { readFile } from "node:fs/promises";

import {
  decodeTensors,
  encodeFixed,
  expandMask,
  fixedPointFromWire,
  fixedPointScale,
  maskForTask,
  openSeed,
  pack,
  sealSeed,
  toHex,
  unpack,
  verifyMaskKey,
} from "../../dist/esm/index.js";

const bytes = (words) => new Uint8Array(words.buffer, words.byteOffset, words.byteLength);
const anchorOf = (a) => ({ maskKey: a.mask_key ?? null, operatorKey: a.operator_key ?? null });

function run(job) {
  switch (job.op) {
    case "scale":
      return { scale: fixedPointScale(fixedPointFromWire(job.fixed_point)) };
    case "expand":
      return { mask: bytes(expandMask(job.seed, job.size)) };
    case "encode":
      return { encoded: bytes(encodeFixed(decodeTensors(job.tensors), fixedPointFromWire(job.fixed_point))) };
    case "seal":
      return { sealed: sealSeed(job.mask_key, job.seed, job.context) };
    case "open":
      return { seed: openSeed(job.private_key, job.sealed, job.context) };
    case "mask": {
      const terms = {
        maskKey: toHex(job.mask_key),
        maskKeySignature: job.signature ? toHex(job.signature) : null,
        fixedPoint: fixedPointFromWire(job.fixed_point),
        threshold: 1,
      };
      const anchor = job.anchor ? anchorOf(job.anchor) : { maskKey: job.mask_key };
      const { masked, sealed } = maskForTask(anchor, terms, decodeTensors(job.tensors), job.context);
      return { masked: bytes(masked), sealed };
    }
    case "verify":
      verifyMaskKey(anchorOf(job.anchor), job.mask_key, job.signature ?? null);
      return {};
    default:
      throw new Error(`unknown op ${job.op}`);
  }
}

const jobs = unpack(await readFile(process.argv[2]));
const answers = jobs.map((job) => {
  try {
    return run(job);
  } catch (error) {
    return { error: error.name, message: error.message };
  }
});
process.stdout.write(pack(answers));
