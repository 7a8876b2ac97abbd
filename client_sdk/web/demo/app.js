// The web demo: N devices (Web Workers) on this page, each training on its own shard.
// Query: ?devices=N (workers on this page, default 1) &first=I (first shard) &rounds=R
// (rounds per device, default: until the page closes) &task=ID &seed=S (seeds each
// device's randomness: S + its index). Secure-aggregation tasks need a trust anchor for
// the mask service's key: &mask_key=HEX (pinned) or &operator_key=HEX (the operator's
// Ed25519 key that signed it), or `secaggTrust` in the page server's config; a real app
// ships it in its code instead. Results, events and errors are kept on
// window.asyncflDemo for tests and benchmarks.
import { ALWAYS, WebDevice, decodeTensor, unpack } from "/sdk/asyncfl-web.js";

const query = new URLSearchParams(location.search);
const state = (window.asyncflDemo = { results: [], events: [], errors: [], devices: [] });
const config = await (await fetch("/demo-api/config")).json();
const task = query.get("task") ?? config.task;
const count = Number(query.get("devices") ?? 1);
const first = Number(query.get("first") ?? 0);
const rounds = query.has("rounds") ? Number(query.get("rounds")) : null;
const seed = query.has("seed") ? Number(query.get("seed")) : undefined;
const secaggTrust =
  query.has("mask_key") || query.has("operator_key")
    ? { maskKey: query.get("mask_key"), operatorKey: query.get("operator_key") }
    : (config.secaggTrust ?? null);
const tbody = document.querySelector("#devices tbody");
document.getElementById("target").textContent = config.target.toFixed(2);

function row(name) {
  const tr = document.createElement("tr");
  tr.innerHTML = `<td>${name}</td><td>starting</td><td>0</td><td>-</td><td>-</td><td>-</td>`;
  tbody.append(tr);
  const cells = tr.querySelectorAll("td");
  return { state: cells[1], rounds: cells[2], loss: cells[3], steps: cells[4], staleness: cells[5], done: 0 };
}

async function startDevice(index) {
  const shard = unpack(new Uint8Array(await (await fetch(`/demo-api/shard/${index % config.devices}`)).arrayBuffer()));
  const view = row(`device ${index}`);
  const device = new WebDevice(
    "/sdk/worker.js",
    {
      serverUrl: location.origin,
      task,
      credentials: { enrollmentKey: config.enrollmentKey, deviceInfo: { platform: "browser", demo: true } },
      storeName: `asyncfl-demo-${index}`,
      ortUrl: "/ort/ort.wasm.min.mjs",
      wasmPaths: "/ort/",
      data: { x: decodeTensor(shard.x), y: decodeTensor(shard.y) },
      policy: ALWAYS, // a demo on a desktop; the browser's hints are still forwarded
      options: { roundIntervalS: 0.2, uploadMarginS: 2, secaggTrust, retry: { maxAttempts: 20, baseDelayS: 0.2, maxDelayS: 5, maxElapsedS: 120 } },
      seed: seed === undefined ? undefined : seed + index,
    },
    {
      onEvent(event) {
        state.events.push({ device: index, kind: event.kind, data: event.data });
        if (event.kind === "progress") {
          view.state.textContent = "training";
          view.state.className = "training";
          view.steps.textContent = String(event.data.steps);
        } else if (event.kind === "checkin" && !event.data.admitted) {
          view.state.textContent = `waiting (${event.data.reason})`;
          view.state.className = "";
        }
      },
      onResult(result) {
        state.results.push({ device: index, ...result });
        view.done += 1;
        view.rounds.textContent = String(view.done);
        view.state.textContent = result.kind;
        view.state.className = result.kind === "trained" ? "trained" : "";
        if (result.kind === "trained") {
          view.loss.textContent = result.loss.toFixed(3);
          view.staleness.textContent = String(result.staleness ?? "-");
        }
      },
      onError(error) {
        state.errors.push({ device: index, message: error.message });
        view.state.textContent = "error (retrying)";
        view.state.className = "error";
      },
    },
  );
  await device.ready;
  device.run(rounds);
  state.devices.push(device);
}

const history = [];
async function poll() {
  try {
    const status = await (await fetch(`/demo-api/status?task=${encodeURIComponent(task)}`)).json();
    document.getElementById("version").textContent = status.version;
    document.getElementById("applied").textContent = status.updates_applied;
    document.getElementById("active").textContent = status.active_sessions;
    if (status.accuracy !== null) {
      document.getElementById("accuracy").textContent = status.accuracy.toFixed(3);
      history.push(status.accuracy);
      const step = 600 / Math.max(1, history.length - 1);
      const points = history.map((a, i) => `${(i * step).toFixed(1)},${(160 - a * 155).toFixed(1)}`).join(" ");
      const goal = 160 - config.target * 155;
      document.getElementById("chart").innerHTML =
        `<line x1="0" x2="600" y1="${goal}" y2="${goal}" stroke="#bbb" stroke-dasharray="4"/>` +
        `<polyline fill="none" stroke="#1565c0" stroke-width="2" points="${points}"/>`;
    }
    state.status = status;
  } catch (error) {
    state.statusError = String(error);
  }
  setTimeout(poll, 1000);
}

poll();
for (let i = 0; i < count; i++) await startDevice(first + i);
