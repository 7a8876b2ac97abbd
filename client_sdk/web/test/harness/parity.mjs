// Parity harness: `node parity.mjs BACKEND IN OUT`. IN is a msgpack step job
// {bundle: dir, params, batches: [{x, y}], lr, repeats} (see demo/steps.js and
// load_tests/web_jobs.py); OUT gets {params (after the first pass), losses, step_ms,
// pass_ms} (msgpack). The Python side compares with its own Trainer.
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

import * as sdk from "../../dist/esm/node.js";
import { runSteps } from "../../demo/steps.js";
import { loadOrt } from "./ort.mjs";

const [backend, input, output] = process.argv.slice(2);
const job = sdk.unpack(await readFile(input));
const { ort, sessionOptions } = await loadOrt(backend);
const read = (name) => readFile(join(job.bundle, name));
const bundle = await sdk.bundleFromParts(await read("manifest.json"), {
  train_step: await read("train_step.onnx"),
  eval_step: await read("eval_step.onnx"),
  infer: await read("infer.onnx"),
});
const trainer = await sdk.Trainer.create(ort, bundle, sessionOptions);
await writeFile(output, sdk.pack(await runSteps(trainer, job, sdk)));
await trainer.release();
