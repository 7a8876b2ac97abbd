// ?job=NAME: run the job in a Web Worker (the same place a device trains) and publish
// {params (msgpack bytes, base64), losses, step_ms} on window.asyncflBench.
const name = new URLSearchParams(location.search).get("job");
const worker = new Worker("/demo/bench-worker.js", { type: "module" });
window.asyncflBench = null;
worker.onmessage = (event) => (window.asyncflBench = event.data);
worker.onerror = (event) => (window.asyncflBench = { error: event.message });
worker.postMessage({ url: `/demo-api/job/${encodeURIComponent(name)}` });
