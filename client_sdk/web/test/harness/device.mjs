// Device harness: `node device.mjs CONFIG.json` runs the SDK's real Client in Node for
// the Python tests (tests/web), which own the server and the fault proxy. CONFIG:
//   {serverUrl, task, enrollmentKey, storage, backend: "node"|"web", rounds,
//    data: path to msgpack {x, y}, options, policy: "always"|"default",
//    state: {...}, unplugAfter: batches, sleepScale, seed}
// Every event, result and error is printed as one JSON line.
import { readFile } from "node:fs/promises";

import { ALWAYS, ArrayDataSource, DEFAULT_POLICY, ManualDeviceState, createNodeClient, decodeTensor, seededRandom, unpack } from "../../dist/esm/node.js";
import { loadOrt } from "./ort.mjs";

const config = JSON.parse(await readFile(process.argv[2], "utf8"));
const say = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const raw = unpack(await readFile(config.data));
const arrays = new ArrayDataSource(decodeTensor(raw.x), decodeTensor(raw.y));
const deviceState = new ManualDeviceState(config.state ?? {});

// Local data whose reading unplugs the charger after `unplugAfter` batches (as a user would).
const data = config.unplugAfter == null ? arrays : {
  count: () => arrays.count(),
  *batches(size, seed) {
    let i = 0;
    for (const batch of arrays.batches(size, seed)) {
      if (i++ === config.unplugAfter) deviceState.update({ charging: false });
      yield batch;
    }
  },
};

const scale = config.sleepScale ?? 1;
const { ort, sessionOptions } = await loadOrt(config.backend ?? "node");
const client = await createNodeClient({
  serverUrl: config.serverUrl,
  task: config.task,
  credentials: { enrollmentKey: config.enrollmentKey, deviceInfo: { harness: "node" } },
  data,
  storage: config.storage,
  ort,
  sessionOptions,
  policy: config.policy === "default" ? DEFAULT_POLICY : ALWAYS,
  deviceState,
  options: config.options ?? {},
  random: seededRandom(config.seed ?? 0),
  sleep: (s) => new Promise((resolve) => setTimeout(resolve, s * scale * 1000)),
  onEvent: (event) => say({ type: "event", kind: event.kind, data: event.data }),
});
let failed = false;
for (let i = 0; i < (config.rounds ?? 1); i++) {
  try {
    say({ type: "result", result: await client.runOnce() });
  } catch (error) {
    failed = true;
    say({ type: "error", name: error.name, message: error.message, code: error.code ?? null });
  }
}
say({ type: "traffic", traffic: client.traffic, requests: client.transport.requests, bytesReceived: client.transport.bytesReceived, bytesSent: client.transport.bytesSent });
await client.close();
process.exitCode = failed ? 3 : 0;
