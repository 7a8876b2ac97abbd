// Parity harness: `node parity.mjs BACKEND IN OUT`. IN is msgpack
// {bundle: dir, params: [tensor], batches: [{x, y}], lr, repeats}; the SDK's Trainer runs
// one train step per batch from `params` (`repeats` passes, for timing), and OUT gets
// {params (after the first pass), losses, step_ms, pass_ms} (msgpack). With `starts`
// (one parameter list per batch) each step starts from its own parameters instead, and
// `step_params` holds every step's result. The Python side compares.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import { Trainer, bundleFromParts, decodeTensor, decodeTensors, encodeTensors, pack, unpack } from "../../dist/esm/node.js";
import { loadOrt } from "./ort.mjs";

const [backend, input, output] = process.argv.slice(2);
const job = unpack(await readFile(input));
const { ort, sessionOptions } = await loadOrt(backend);
const read = (name) => readFile(join(job.bundle, name));
const bundle = await bundleFromParts(await read("manifest.json"), {
  train_step: await read("train_step.onnx"),
  eval_step: await read("eval_step.onnx"),
  infer: await read("infer.onnx"),
});
const trainer = await Trainer.create(ort, bundle, sessionOptions);
let first = null;
const stepParams = [];
const losses = [];
const stepMs = [];
const passMs = [];
for (let repeat = 0; repeat < (job.repeats ?? 1); repeat++) {
  let params = decodeTensors(job.params);
  let state = trainer.initialState();
  const passStarted = performance.now();
  for (const [k, batch] of job.batches.entries()) {
    if (job.starts) params = decodeTensors(job.starts[k]); // stepwise: from the given parameters
    const x = decodeTensor(batch.x);
    const y = decodeTensor(batch.y);
    const started = performance.now();
    const [next, nextState, loss] = await trainer.trainStep(params, state, x, y, job.lr);
    stepMs.push(performance.now() - started);
    params = next;
    state = nextState;
    if (repeat === 0) losses.push(loss);
    if (repeat === 0 && job.starts) stepParams.push(encodeTensors(params));
  }
  passMs.push(performance.now() - passStarted);
  first ??= params;
}
await writeFile(output, pack({ params: encodeTensors(first), step_params: stepParams, losses, step_ms: stepMs, pass_ms: passMs }));
await trainer.release();
