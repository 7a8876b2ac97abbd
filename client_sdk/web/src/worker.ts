/**
 * The Web Worker entry: one device, trained off the page's main thread.
 *
 * The page sends `start` (config, local data), then `run`; it forwards eligibility
 * hints with `state` (workers cannot see the Battery API or page visibility) and ends
 * with `stop`. The worker answers with `event`s, one `result` per round, and `stopped`.
 * Credentials, the open session and the graph cache live in IndexedDB, so a reloaded
 * page resumes where the last one stopped.
 */

import { Client } from "./client.js";
import { ArrayDataSource, seededRandom } from "./data.js";
import { ManualDeviceState } from "./eligibility.js";
import { describe } from "./errors.js";
import { IndexedDbStore } from "./indexeddb.js";
import type { FromWorker, ToWorker, WorkerConfig } from "./protocol.js";
import { WEB_SESSION_OPTIONS, loadWebOrt } from "./webort.js";

interface WorkerScope {
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  postMessage(message: FromWorker): void;
}

const scope = globalThis as unknown as WorkerScope;
const deviceState = new ManualDeviceState();
let client: Client | null = null;
let stopper: AbortController | null = null;
let running: Promise<void> | null = null;

function post(message: FromWorker): void {
  scope.postMessage(message);
}

async function start(config: WorkerConfig): Promise<void> {
  const ort = await loadWebOrt(config.ortUrl, config.wasmPaths);
  deviceState.update(config.state ?? {});
  client = new Client({
    serverUrl: config.serverUrl,
    task: config.task,
    credentials: config.credentials,
    data: new ArrayDataSource(config.data.x, config.data.y),
    evalData: config.evalData ? new ArrayDataSource(config.evalData.x, config.evalData.y) : undefined,
    store: new IndexedDbStore(config.storeName),
    ort,
    sessionOptions: WEB_SESSION_OPTIONS,
    policy: config.policy,
    deviceState,
    options: config.options,
    random: config.seed === undefined ? undefined : seededRandom(config.seed),
    onEvent: (event) => post({ type: "event", event }),
  });
  post({ type: "ready" });
}

function run(rounds: number | null): void {
  if (client === null || running !== null) return;
  stopper = new AbortController();
  running = client
    .runForever({
      signal: stopper.signal,
      maxRounds: rounds,
      onResult: (result) => post({ type: "result", result }),
      onError: (error) => post({ type: "error", name: error.name, message: error.message }),
    })
    .catch((error: unknown) => post({ type: "error", name: (error as Error)?.name ?? "Error", message: describe(error) }))
    .finally(() => {
      running = null;
      post({ type: "stopped" });
    });
}

scope.onmessage = (event) => {
  const message = event.data;
  if (message.type === "start") {
    start(message.config).catch((error: unknown) => post({ type: "error", name: (error as Error)?.name ?? "Error", message: describe(error) }));
  } else if (message.type === "run") {
    run(message.rounds);
  } else if (message.type === "state") {
    deviceState.update(message.state);
  } else if (message.type === "stop") {
    stopper?.abort();
    if (running === null) post({ type: "stopped" });
  }
};
