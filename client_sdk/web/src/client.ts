/**
 * The device client: check in, train on local data, upload, survive reloads (mirrors
 * `client_sdk/client.py`). One `runOnce()` is one session:
 *
 * ```
 * eligible? -> resume an open session, or check in -> fetch graphs and parameters
 * (cache) -> [evaluate] -> train within plan, budget and deadline -> store the update
 * -> upload (retried; idempotent by session) -> forget the session
 * ```
 *
 * Every step that can be interrupted (a closed tab, a killed process) leaves the store
 * in a state the next run continues from (see `state.ts`). Errors thrown are SdkErrors;
 * expected outcomes are results (`results.ts`).
 */

import { ServerApi, encodeMaskedUpdate, float32Encoder } from "./api.js";
import type { Checkin, UpdateEncoder } from "./api.js";
import { ArtifactStore } from "./artifacts.js";
import type { Traffic } from "./artifacts.js";
import { HttpCache } from "./cache.js";
import type { Batch, DataSource } from "./data.js";
import { DEFAULT_POLICY, ManualDeviceState, checkPolicy, ineligibleReasons } from "./eligibility.js";
import type { DeviceStateProvider, EligibilityPolicy } from "./eligibility.js";
import { BundleError, ConfigError, SdkError, ServerError, TrainingError, WireFormatError, describe } from "./errors.js";
import { Emitter } from "./events.js";
import type { EventCallback } from "./events.js";
import type { OrtModule } from "./ort.js";
import { checkCredentials, resolveOptions } from "./options.js";
import type { ClientOptions, Credentials } from "./options.js";
import { planFrom } from "./plan.js";
import { clipByGlobalNorm } from "./privacy.js";
import type { RoundResult, Trained } from "./results.js";
import { Retrier, isRetryable, realSleep } from "./retry.js";
import type { Random, Sleep } from "./retry.js";
import { SecaggError, maskForTask, seedContext } from "./secagg.js";
import { ClientState, pendingFromCheckin } from "./state.js";
import type { PendingSession, TrainSummary } from "./state.js";
import type { Store } from "./store.js";
import type { Trainer } from "./trainer.js";
import { FetchTransport } from "./transport.js";
import type { Transport } from "./transport.js";
import { SDK_VERSION } from "./version.js";
import type { Tensor } from "./wire.js";

export interface ClientConfig {
  readonly serverUrl: string;
  readonly task: string;
  readonly credentials: Credentials;
  /** Local training examples. */
  readonly data: DataSource;
  /** Where credentials, the open session and the cache live. */
  readonly store: Store;
  /** `onnxruntime-web` or `onnxruntime-node` (node.ts and browser.ts pass it for you). */
  readonly ort: OrtModule;
  readonly sessionOptions?: object;
  readonly policy?: EligibilityPolicy;
  readonly deviceState?: DeviceStateProvider;
  readonly options?: Partial<ClientOptions>;
  readonly evalData?: DataSource;
  readonly onEvent?: EventCallback;
  readonly transport?: Transport;
  readonly encoder?: UpdateEncoder;
  readonly sleep?: Sleep;
  /** Wall clock in seconds. */
  readonly clock?: () => number;
  readonly random?: Random;
}

type Admitted = Extract<Checkin, { admitted: true }>;

export interface RunForever {
  readonly signal?: AbortSignal;
  readonly maxRounds?: number | null;
  readonly onResult?: (result: RoundResult) => void;
  readonly onError?: (error: SdkError) => void;
}

export class Client {
  readonly task: string;
  readonly options: ClientOptions;
  readonly api: ServerApi;
  readonly transport: Transport;
  private readonly credentials: Credentials;
  private readonly data: DataSource;
  private readonly evalData: DataSource;
  private readonly policy: EligibilityPolicy;
  private readonly deviceState: DeviceStateProvider;
  private readonly state: ClientState;
  private readonly artifacts: ArtifactStore;
  private readonly emitter: Emitter;
  private readonly sleep: Sleep;
  private readonly clock: () => number;
  private readonly random: Random;
  private token = "";
  private running: Promise<unknown> = Promise.resolve();

  constructor(config: ClientConfig) {
    this.task = config.task;
    this.options = resolveOptions(config.options);
    this.credentials = checkCredentials(config.credentials);
    this.data = config.data;
    this.evalData = config.evalData ?? config.data;
    this.policy = checkPolicy(config.policy ?? DEFAULT_POLICY);
    this.deviceState = config.deviceState ?? new ManualDeviceState();
    this.sleep = config.sleep ?? realSleep;
    this.clock = config.clock ?? (() => Date.now() / 1000);
    this.random = config.random ?? Math.random;
    this.emitter = new Emitter(config.task, config.onEvent ?? null);
    this.state = new ClientState(config.store);
    this.transport = config.transport ?? new FetchTransport(config.serverUrl, { timeoutS: this.options.requestTimeoutS });
    const retrier = new Retrier(this.options.retry, this.sleep, this.random, (what, attempt, delayS, error) =>
      this.emitter.emit("retry", { what, attempt, delayS, error: error.message }),
    );
    this.api = new ServerApi(this.transport, retrier, config.encoder ?? float32Encoder);
    const cache = new HttpCache(config.store, this.options.cacheMaxBytes, this.clock);
    this.artifacts = new ArtifactStore(this.api, cache, () => this.deviceToken(), config.ort, config.sessionOptions ?? {}, this.clock);
  }

  /** Graph and parameter bytes downloaded so far (a cache hit downloads none). */
  get traffic(): Readonly<Traffic> {
    return this.artifacts.traffic;
  }

  /** One session; throws SdkError when retries could not get it through (an open
   * session stays stored and the next call picks it up). */
  runOnce(): Promise<RoundResult> {
    const round = this.running.then(() => this.round()); // one round at a time: they share the store
    this.running = round.catch(() => undefined);
    return round.catch((error: unknown) => {
      this.emitter.emit("error", { error: describe(error), type: error instanceof Error ? error.name : typeof error });
      throw error;
    });
  }

  /** `runOnce()` until `signal` aborts (or `maxRounds` ran), waiting between rounds as
   * the result says; failed rounds back off exponentially with full jitter. */
  async runForever(run: RunForever = {}): Promise<void> {
    const { signal, maxRounds = null, onResult, onError } = run;
    let rounds = 0;
    let failures = 0;
    while (!signal?.aborted) {
      if (maxRounds !== null && rounds >= maxRounds) return;
      rounds += 1;
      let delay: number;
      try {
        const result = await this.runOnce();
        onResult?.(result);
        delay = this.waitAfter(result);
        failures = 0;
      } catch (error) {
        if (!(error instanceof SdkError)) throw error;
        onError?.(error);
        failures += 1;
        delay = this.random() * Math.min(this.options.maxErrorBackoffS, 2 ** failures);
        if (error instanceof ServerError && error.retryAfter) delay = Math.max(delay, error.retryAfter);
      }
      if (maxRounds !== null && rounds >= maxRounds) return;
      await this.pause(delay, signal);
    }
  }

  async close(): Promise<void> {
    await this.artifacts.close();
  }

  // -- one round ----------------------------------------------------------------------
  private async round(): Promise<RoundResult> {
    const reasons = this.ineligible();
    if (reasons.length) {
      this.emitter.emit("not_eligible", { reasons, duringTraining: false });
      return { kind: "not_eligible", reasons, duringTraining: false };
    }
    const open = await this.state.session(this.task);
    if (open !== null) {
      const resumed = await this.resume(open);
      if (resumed !== null) return resumed;
    }
    if (this.data.count() < 1) {
      this.emitter.emit("not_eligible", { reasons: ["no_data"], duringTraining: false });
      return { kind: "not_eligible", reasons: ["no_data"], duringTraining: false };
    }
    const checkin = await this.checkin();
    if (!checkin.admitted) return { kind: "no_slot", retryAfter: checkin.retryAfter, reason: checkin.reason };
    const pending = pendingFromCheckin(this.task, checkin, this.clock());
    await this.state.saveSession(pending);
    return this.work(pending, false);
  }

  /** Train and upload. A failure that would fail again the same way (a bad bundle or
   * plan, a diverging model) drops the session; a network failure keeps it. */
  private async work(pending: PendingSession, resumed: boolean): Promise<RoundResult> {
    try {
      return await this.trainAndUpload(pending, resumed);
    } catch (error) {
      if (error instanceof BundleError || error instanceof TrainingError || error instanceof ConfigError || error instanceof WireFormatError) {
        await this.abandon(pending);
      }
      throw error;
    }
  }

  /** Drop a session that will not upload and give its slot back (best effort: the
   * server frees it at the deadline anyway). */
  private async abandon(pending: PendingSession): Promise<void> {
    await this.state.clearSession(this.task);
    try {
      await this.api.releaseSession(this.task, pending.session);
    } catch (error) {
      if (!(error instanceof SdkError)) throw error;
    }
  }

  /** Finish the session an earlier run left open, or drop it (returns null). */
  private async resume(pending: PendingSession): Promise<RoundResult | null> {
    const left = pending.deadline - this.clock();
    let action: "upload" | "continue" | "drop";
    if (pending.phase === "trained") action = "upload";
    else if (left >= this.options.uploadMarginS + this.options.minTrainS) action = "continue";
    else action = "drop";
    this.emitter.emit("resume", { sessionId: pending.sessionId, phase: pending.phase, action });
    if (action === "upload") {
      const body = await this.state.update(this.task);
      if (body !== null) return this.upload(pending, body, true);
    } else if (action === "continue") {
      return this.work(pending, true);
    }
    await this.abandon(pending);
    return null;
  }

  private async trainAndUpload(pending: PendingSession, resumed: boolean): Promise<RoundResult> {
    const trainer = await this.artifacts.trainer(pending.artifacts);
    const params = await this.artifacts.params(this.task, pending.version, pending.paramsUrl, trainer.bundle.manifest);
    let evaluation: Record<string, number> | null = null;
    if (pending.evaluate && this.evalData.count() > 0) {
      evaluation = await this.evaluate(trainer, params, pending);
      if (!pending.train) {
        await this.abandon(pending);
        return { kind: "evaluated", version: pending.version, metrics: evaluation };
      }
    }
    const budget = pending.deadline - this.clock() - this.options.uploadMarginS;
    if (budget < this.options.minTrainS) {
      await this.abandon(pending);
      return { kind: "rejected", reason: "deadline_too_close", status: 0, message: `${budget.toFixed(1)}s left to train` };
    }
    const plan = planFrom(pending.plan, budget);
    const seed = Math.floor(this.random() * 2 ** 31);
    const stoppedBy: string[] = [];
    const started = performance.now();
    const result = await trainer.train(params, this.epochs(plan.epochs, plan.batchSize, seed), plan, {
      shouldContinue: () => {
        const reasons = this.ineligible();
        stoppedBy.push(...reasons);
        return reasons.length === 0;
      },
      onStep: (steps, examples) => {
        if (steps % this.options.progressEvery === 0) {
          this.emitter.emit("progress", { steps, examples, elapsedS: (performance.now() - started) / 1000 });
        }
      },
    });
    this.emitter.emit("progress", { steps: result.steps, examples: result.numExamples, elapsedS: result.wallS });
    if (result.stopped === "aborted" || result.steps === 0) {
      await this.abandon(pending); // nothing but the release leaves the device
      const reasons = result.stopped === "aborted" ? stoppedBy : ["no_data"];
      this.emitter.emit("not_eligible", { reasons, duringTraining: true });
      return { kind: "not_eligible", reasons, duringTraining: true };
    }
    let delta: Tensor[] = result.delta;
    if (this.options.clipNorm !== null) [delta] = clipByGlobalNorm(delta, this.options.clipNorm);
    const numExamples = Math.max(1, Math.min(result.numExamples, this.data.count()));
    const metrics = { loss: result.meanLoss, steps: result.steps, train_s: result.wallS };
    const update = { session: pending.session, baseVersion: pending.version, numExamples, delta, metrics };
    let body: Uint8Array;
    if (pending.secureAggregation === null) {
      body = this.api.encoder.encode(update);
    } else {
      try {
        // only masked words and a sealed seed leave; the update id is the session id
        const context = seedContext(this.task, pending.sessionId, pending.sessionId);
        const { masked, sealed } = maskForTask(this.options.secaggTrust, pending.secureAggregation, delta, context);
        body = encodeMaskedUpdate(update, masked, sealed);
      } catch (error) {
        if (!(error instanceof SecaggError)) throw error;
        await this.abandon(pending);
        this.emitter.emit("secagg_refused", { sessionId: pending.sessionId, error: error.message });
        return { kind: "rejected", reason: "secagg_untrusted", status: 0, message: error.message };
      }
    }
    const summary: TrainSummary = {
      numExamples,
      steps: result.steps,
      loss: result.meanLoss,
      trainS: result.wallS,
      stopped: result.stopped,
      evaluation,
    };
    const trained = await this.state.saveUpdate(pending, body, summary);
    return this.upload(trained, body, resumed);
  }

  private async *epochs(epochs: number, batchSize: number, seed: number): AsyncIterable<Batch> {
    for (let epoch = 0; epoch < epochs; epoch++) yield* this.data.batches(batchSize, seed + epoch);
  }

  private async upload(pending: PendingSession, body: Uint8Array, resumed: boolean): Promise<RoundResult> {
    let ack: Record<string, unknown>;
    try {
      ack = await this.api.upload(this.task, body);
    } catch (error) {
      if (!(error instanceof ServerError) || isRetryable(error)) throw error; // the update stays stored
      await this.state.clearSession(this.task);
      return { kind: "rejected", reason: error.code, status: error.status, message: error.serverMessage };
    }
    await this.state.clearSession(this.task);
    const summary = pending.summary;
    const duplicate = Boolean(ack["duplicate"] ?? false);
    const updateId = String(ack["update_id"] ?? pending.sessionId);
    this.emitter.emit("upload", { version: pending.version, numExamples: summary?.numExamples ?? 0, bytes: body.byteLength, updateId, duplicate });
    const staleness = ack["staleness"];
    const trained: Trained = {
      kind: "trained",
      version: pending.version,
      numExamples: summary?.numExamples ?? 0,
      steps: summary?.steps ?? 0,
      loss: summary?.loss ?? NaN,
      trainS: summary?.trainS ?? 0,
      stopped: summary?.stopped ?? "",
      updateId,
      staleness: typeof staleness === "number" ? staleness : null,
      duplicate,
      resumed,
      evaluation: summary?.evaluation ?? null,
    };
    return trained;
  }

  private async evaluate(trainer: Trainer, params: Tensor[], pending: PendingSession): Promise<Record<string, number>> {
    let lossSum = 0;
    let correct = 0;
    let count = 0;
    for await (const { x, y } of this.evalData.batches(this.options.evalBatchSize, null)) {
      const r = await trainer.evaluate(params, x, y);
      lossSum += r.lossSum;
      correct += r.correct;
      count += r.count;
    }
    if (count === 0) throw new ConfigError("no local examples to evaluate on");
    const metrics: Record<string, number> = { loss: lossSum / count, num_examples: count };
    if (trainer.bundle.manifest.taskType !== "regression") metrics["accuracy"] = correct / count;
    this.emitter.emit("evaluation", { version: pending.version, ...metrics });
    try {
      await this.api.reportEvaluation(this.task, pending.session, pending.version, metrics);
    } catch (error) {
      // a server without federated evaluation must not cost the training round
      if (!(error instanceof ServerError) || isRetryable(error)) throw error;
    }
    return metrics;
  }

  // -- credentials and check-in -------------------------------------------------------
  private async checkin(): Promise<Checkin> {
    const info = { sdk_version: SDK_VERSION, sdk: "web" };
    let checkin: Checkin;
    try {
      checkin = await this.api.checkin(this.task, await this.deviceToken(), info);
    } catch (error) {
      if (!(error instanceof ServerError) || error.code !== "invalid_device_token" || !this.credentials.enrollmentKey) throw error;
      await this.state.forgetCredentials(); // the token was refused: enroll again
      this.token = "";
      checkin = await this.api.checkin(this.task, await this.deviceToken(), info);
    }
    const admitted = checkin.admitted ? (checkin as Admitted) : null;
    this.emitter.emit("checkin", {
      admitted: checkin.admitted,
      version: admitted?.version ?? -1,
      sessionId: admitted?.sessionId ?? "",
      deadlineS: admitted?.deadlineS ?? 0,
      retryAfter: checkin.admitted ? 0 : checkin.retryAfter,
      reason: checkin.admitted ? null : checkin.reason,
    });
    return checkin;
  }

  private async deviceToken(): Promise<string> {
    if (this.token) return this.token;
    if (this.credentials.deviceToken) {
      this.token = this.credentials.deviceToken;
      return this.token;
    }
    let stored = await this.state.credentials();
    if (stored === null) {
      const { deviceId, deviceToken } = await this.api.enroll(this.credentials.enrollmentKey ?? "", this.credentials.deviceInfo ?? {});
      stored = { deviceId, deviceToken };
      await this.state.saveCredentials(stored);
    }
    this.token = stored.deviceToken;
    return this.token;
  }

  // -- helpers ------------------------------------------------------------------------
  private ineligible(): string[] {
    try {
      return ineligibleReasons(this.policy, this.deviceState.current());
    } catch {
      return ["state_unavailable"]; // the app's provider failed: not knowing means not training
    }
  }

  private waitAfter(result: RoundResult): number {
    if (result.kind === "no_slot") return result.retryAfter;
    if (result.kind === "not_eligible") return this.options.ineligiblePollS;
    return this.options.roundIntervalS;
  }

  private async pause(seconds: number, signal?: AbortSignal): Promise<void> {
    if (signal === undefined) return this.sleep(seconds);
    if (signal.aborted) return;
    let onAbort: () => void = () => undefined;
    const aborted = new Promise<void>((resolve) => {
      onAbort = resolve;
      signal.addEventListener("abort", onAbort, { once: true });
    });
    await Promise.race([this.sleep(seconds), aborted]);
    signal.removeEventListener("abort", onAbort);
  }
}

