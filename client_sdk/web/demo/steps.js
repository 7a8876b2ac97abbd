// One train step per batch of a step job, `repeats` passes over, timed: shared by the
// bench page's worker (bench-worker.js) and the Node harness (test/harness/parity.mjs).
// `sdk` is the web SDK module (its tensor codecs), passed in so this file imports
// nothing and runs in both. A job is {params, batches: [{x, y}], lr, repeats}.
export async function runSteps(trainer, job, sdk) {
  let first = null;
  const losses = [];
  const stepMs = [];
  const passMs = [];
  for (let repeat = 0; repeat < (job.repeats ?? 1); repeat++) {
    let params = sdk.decodeTensors(job.params);
    let state = trainer.initialState();
    const passStarted = performance.now();
    for (const batch of job.batches) {
      const started = performance.now();
      const [next, nextState, loss] = await trainer.trainStep(params, state, sdk.decodeTensor(batch.x), sdk.decodeTensor(batch.y), job.lr);
      stepMs.push(performance.now() - started);
      params = next;
      state = nextState;
      if (repeat === 0) losses.push(loss);
    }
    passMs.push(performance.now() - passStarted);
    first ??= params;
  }
  return { params: sdk.encodeTensors(first), losses, step_ms: stepMs, pass_ms: passMs };
}
