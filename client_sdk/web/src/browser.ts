/**
 * Browser wiring: a device in a Web Worker (`WebDevice`), IndexedDB as its store, and
 * eligibility hints from the platform.
 *
 * ```ts
 * import { WebDevice } from "asyncfl-web/browser";
 * const device = new WebDevice("/sdk/worker.js", { serverUrl, task, credentials, storeName: "asyncfl-0",
 *   ortUrl: "/ort/ort.wasm.min.mjs", wasmPaths: "/ort/", data: { x, y } }, { onEvent: console.log });
 * await device.ready; device.run();
 * ```
 */

import type { DeviceState } from "./eligibility.js";
import { SdkError } from "./errors.js";
import type { SdkEvent } from "./events.js";
import type { FromWorker, ToWorker, WorkerConfig } from "./protocol.js";
import type { RoundResult } from "./results.js";

export * from "./index.js";
export { IndexedDbStore } from "./indexeddb.js";
export type { FromWorker, ToWorker, WorkerConfig } from "./protocol.js";
export { WEB_SESSION_OPTIONS, loadWebOrt } from "./webort.js";

interface BatteryManager extends EventTarget {
  readonly charging: boolean;
  readonly level: number;
}

interface NetworkInformation extends EventTarget {
  readonly type?: string;
  readonly saveData?: boolean;
}

/**
 * What the browser tells about the device, as eligibility *hints*: they are coarse and
 * may be missing, so an app that knows better (a native shell, a WebView bridge) should
 * feed its own values instead.
 *
 * - `charging`, `battery`: the Battery Status API where present (Chromium), else null.
 * - `unmetered`: false when offline (`navigator.onLine`) or on a cellular link or with
 *   data saver on (Network Information API); true on wifi/ethernet; null when unknown.
 * - `idle`: true when the page is hidden (`document.visibilityState`), else false.
 *
 * Calls `onChange` with the state now and on every change; returns a function that stops.
 */
export function browserHints(onChange: (state: Partial<DeviceState>) => void): () => void {
  const nav = globalThis.navigator as Navigator & { getBattery?: () => Promise<BatteryManager>; connection?: NetworkInformation };
  const stops: (() => void)[] = [];
  const listen = (target: EventTarget, type: string, fn: () => void): void => {
    target.addEventListener(type, fn);
    stops.push(() => target.removeEventListener(type, fn));
  };
  const network = (): Partial<DeviceState> => {
    if (!nav.onLine) return { unmetered: false };
    const connection = nav.connection;
    if (connection?.saveData || connection?.type === "cellular") return { unmetered: false };
    if (connection?.type === "wifi" || connection?.type === "ethernet") return { unmetered: true };
    return { unmetered: null };
  };
  const visibility = (): Partial<DeviceState> => ({ idle: typeof document === "undefined" ? null : document.visibilityState === "hidden" });
  onChange({ ...network(), ...visibility() });
  listen(globalThis, "online", () => onChange(network()));
  listen(globalThis, "offline", () => onChange(network()));
  if (nav.connection) listen(nav.connection, "change", () => onChange(network()));
  if (typeof document !== "undefined") listen(document, "visibilitychange", () => onChange(visibility()));
  if (typeof nav.getBattery === "function") {
    let stopped = false;
    stops.push(() => (stopped = true));
    nav
      .getBattery()
      .then((battery) => {
        if (stopped) return;
        const report = (): void => onChange({ charging: battery.charging, battery: battery.level });
        report();
        listen(battery, "chargingchange", report);
        listen(battery, "levelchange", report);
      })
      .catch(() => undefined); // no battery information: the fields stay unknown
  }
  return () => stops.splice(0).forEach((stop) => stop());
}

export interface WebDeviceHandlers {
  readonly onEvent?: (event: SdkEvent) => void;
  readonly onResult?: (result: RoundResult) => void;
  readonly onError?: (error: SdkError) => void;
  /** Forward `browserHints()` to the worker (default true). */
  readonly hints?: boolean;
}

/** One device whose client (check-in, training, upload) runs in a Web Worker. */
export class WebDevice {
  readonly worker: Worker;
  /** Resolves once the worker has loaded onnxruntime-web and built its client. */
  readonly ready: Promise<void>;
  private stopHints: () => void = () => undefined;
  private stopped: (() => void) | null = null;

  constructor(workerUrl: string | URL, config: WorkerConfig, handlers: WebDeviceHandlers = {}) {
    this.worker = new Worker(workerUrl, { type: "module" });
    let markReady: () => void = () => undefined;
    let failReady: (error: SdkError) => void = () => undefined;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      if (message.type === "ready") markReady();
      else if (message.type === "event") handlers.onEvent?.(message.event);
      else if (message.type === "result") handlers.onResult?.(message.result);
      else if (message.type === "stopped") this.stopped?.();
      else if (message.type === "error") {
        const error = new SdkError(`${message.name}: ${message.message}`);
        failReady(error);
        handlers.onError?.(error);
      }
    };
    this.worker.onerror = (event) => failReady(new SdkError(`the device worker failed: ${event.message}`));
    this.send({ type: "start", config });
    if (handlers.hints ?? true) this.stopHints = browserHints((state) => this.updateState(state));
  }

  /** Run `rounds` rounds (null: until `stop()`). */
  run(rounds: number | null = null): void {
    this.send({ type: "run", rounds });
  }

  /** Tell the worker what the app knows about the device (charging, idle, ...). */
  updateState(state: Partial<DeviceState>): void {
    this.send({ type: "state", state });
  }

  /** Stop after the current step or wait; resolves when the worker's loop ended. */
  stop(): Promise<void> {
    this.stopHints();
    const ended = new Promise<void>((resolve) => (this.stopped = resolve));
    this.send({ type: "stop" });
    return ended;
  }

  terminate(): void {
    this.stopHints();
    this.worker.terminate();
  }

  private send(message: ToWorker): void {
    this.worker.postMessage(message);
  }
}
