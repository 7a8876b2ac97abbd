// The bench page's worker: runs a step job (see steps.js) on onnxruntime-web. A job is
// msgpack {manifest, graphs: {train_step, eval_step, infer}, params, batches, lr, ...}.
import * as sdk from "/sdk/asyncfl-web.js";
import { runSteps } from "/demo/steps.js";

self.onmessage = async (event) => {
  try {
    const job = sdk.unpack(new Uint8Array(await (await fetch(event.data.url)).arrayBuffer()));
    const ort = await sdk.loadWebOrt("/ort/ort.wasm.min.mjs", "/ort/");
    const trainer = await sdk.Trainer.create(ort, await sdk.bundleFromParts(job.manifest, job.graphs), sdk.WEB_SESSION_OPTIONS);
    const out = await runSteps(trainer, job, sdk);
    let binary = "";
    for (const b of sdk.pack({ params: out.params })) binary += String.fromCharCode(b);
    self.postMessage({ params: btoa(binary), losses: out.losses, step_ms: out.step_ms, pass_ms: out.pass_ms });
  } catch (error) {
    self.postMessage({ error: String(error?.stack ?? error) });
  }
};
