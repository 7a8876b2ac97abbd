// The bench page's worker: one train step per batch of the job, timed. A job is msgpack
// {manifest, graphs: {train_step, eval_step, infer}, params, batches: [{x, y}], lr, repeats}.
import { Trainer, WEB_SESSION_OPTIONS, bundleFromParts, decodeTensor, decodeTensors, encodeTensors, loadWebOrt, pack, unpack } from "/sdk/asyncfl-web.js";

self.onmessage = async (event) => {
  try {
    const job = unpack(new Uint8Array(await (await fetch(event.data.url)).arrayBuffer()));
    const ort = await loadWebOrt("/ort/ort.wasm.min.mjs", "/ort/");
    const trainer = await Trainer.create(ort, await bundleFromParts(job.manifest, job.graphs), WEB_SESSION_OPTIONS);
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
        const started = performance.now();
        const [next, nextState, loss] = await trainer.trainStep(params, state, decodeTensor(batch.x), decodeTensor(batch.y), job.lr);
        stepMs.push(performance.now() - started);
        params = next;
        state = nextState;
        if (repeat === 0) losses.push(loss);
        if (repeat === 0 && job.starts) stepParams.push(encodeTensors(params));
      }
      passMs.push(performance.now() - passStarted);
      first ??= params;
    }
    const bytes = pack({ params: encodeTensors(first), step_params: stepParams });
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    self.postMessage({ params: btoa(binary), losses, step_ms: stepMs, pass_ms: passMs });
  } catch (error) {
    self.postMessage({ error: String(error?.stack ?? error) });
  }
};
