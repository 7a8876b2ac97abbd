/**
 * Train and evaluate with a bundle's ONNX graphs on stock ONNX Runtime (mirrors
 * `client_sdk/trainer.py`).
 *
 * `train_step` maps `(*params, *optimizer_state, x, y, lr)` to
 * `(*new_params, *new_state, loss)`; the trainer feeds it local batches, keeps the
 * optimizer state (zeros at the start of every run) and returns `delta = new - base`.
 * ONNX Runtime failures surface as TrainingError (BundleError when a graph cannot load).
 */

import type { Bundle, GraphName, TensorSpec } from "./bundle.js";
import { paramsMismatch } from "./bundle.js";
import type { Batch } from "./data.js";
import { BundleError, TrainingError, describe } from "./errors.js";
import type { OrtModule, OrtSession, OrtTensor } from "./ort.js";
import { fromOrt, scalar, toOrt } from "./ort.js";
import type { TrainPlan } from "./plan.js";
import { zeros } from "./wire.js";
import type { Tensor } from "./wire.js";

export type StopReason = "completed" | "max_steps" | "time_budget" | "aborted";

export interface TrainResult {
  readonly delta: Tensor[];
  readonly params: Tensor[];
  readonly numExamples: number;
  readonly steps: number;
  /** Example-weighted mean of the step losses (NaN when no step ran). */
  readonly meanLoss: number;
  readonly wallS: number;
  readonly stopped: StopReason;
}

export interface EvalResult {
  readonly lossSum: number;
  readonly correct: number;
  readonly count: number;
}

export interface TrainHooks {
  /** Asked before every step; false stops training ("aborted"). */
  readonly shouldContinue?: () => boolean;
  /** Called after every step. */
  readonly onStep?: (steps: number, examples: number) => void;
  /** Seconds on a monotonic clock. */
  readonly clock?: () => number;
}

const monotonic = (): number => performance.now() / 1000;
const YIELD_EVERY_S = 0.05;

/** Let queued events (a page's state messages, timers) run between steps. */
function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

export class Trainer {
  private readonly sessions = new Map<GraphName, OrtSession>();

  private constructor(
    private readonly ort: OrtModule,
    readonly bundle: Bundle,
    private readonly options: object,
  ) {}

  /** Load the bundle's train-step graph (fail fast on a graph ORT cannot load). */
  static async create(ort: OrtModule, bundle: Bundle, sessionOptions: object = {}): Promise<Trainer> {
    const trainer = new Trainer(ort, bundle, sessionOptions);
    await trainer.session("train_step");
    return trainer;
  }

  get params(): readonly TensorSpec[] {
    return this.bundle.manifest.params;
  }

  initialState(): Tensor[] {
    return this.bundle.manifest.optimizerState.map((s) => zeros(s.dtype, s.shape as number[]));
  }

  /** Run the train-step graph once: (new params, new state, loss). */
  async trainStep(params: readonly Tensor[], state: readonly Tensor[], x: Tensor, y: Tensor, lr: number): Promise<[Tensor[], Tensor[], number]> {
    const m = this.bundle.manifest;
    const feeds: Record<string, OrtTensor> = {};
    m.params.forEach((s, i) => (feeds[s.name] = toOrt(this.ort, params[i]!)));
    m.optimizerState.forEach((s, i) => (feeds[s.name] = toOrt(this.ort, state[i]!)));
    feeds["x"] = toOrt(this.ort, x);
    feeds["y"] = toOrt(this.ort, y);
    feeds["lr"] = new this.ort.Tensor("float32", new Float32Array([lr]), []);
    const out = await this.run("train_step", feeds);
    const nParams = m.params.length;
    const nState = m.optimizerState.length;
    const tensors = out.map((t, i) => (i < nParams + nState ? fromOrt(t, `train_step output ${i}`) : null));
    return [tensors.slice(0, nParams) as Tensor[], tensors.slice(nParams, nParams + nState) as Tensor[], scalar(out[out.length - 1], "train_step loss")];
  }

  /** One pass over `batches` within `plan` (its maxSteps and timeBudgetS). */
  async train(params: readonly Tensor[], batches: Iterable<Batch> | AsyncIterable<Batch>, plan: TrainPlan, hooks: TrainHooks = {}): Promise<TrainResult> {
    const problem = paramsMismatch(params, this.params);
    if (problem !== null) throw new TrainingError(`parameters do not match the bundle: ${problem}`);
    const clock = hooks.clock ?? monotonic;
    let current = [...params];
    let state = this.initialState();
    const start = clock();
    let lastYield = start;
    let steps = 0;
    let seen = 0;
    let lossSum = 0;
    let stopped: StopReason = "completed";
    for await (const { x, y } of batches) {
      if (plan.maxSteps !== null && steps >= plan.maxSteps) {
        stopped = "max_steps";
        break;
      }
      if (plan.timeBudgetS !== null && clock() - start >= plan.timeBudgetS) {
        stopped = "time_budget";
        break;
      }
      if (clock() - lastYield >= YIELD_EVERY_S) {
        await yieldToEvents();
        lastYield = clock();
      }
      if (hooks.shouldContinue !== undefined && !hooks.shouldContinue()) {
        stopped = "aborted";
        break;
      }
      this.checkBatch(x, y);
      const [next, nextState, loss] = await this.trainStep(current, state, x, y, plan.lr);
      if (!Number.isFinite(loss)) throw new TrainingError(`loss is ${loss} at step ${steps + 1}: training diverged`);
      current = next;
      state = nextState;
      steps += 1;
      const rows = x.shape[0]!;
      seen += rows;
      lossSum += loss * rows;
      hooks.onStep?.(steps, seen);
    }
    return {
      delta: current.map((t, i) => subtract(t, params[i]!)),
      params: current,
      numExamples: seen,
      steps,
      meanLoss: seen ? lossSum / seen : NaN,
      wallS: clock() - start,
      stopped,
    };
  }

  /** Summed loss, correct predictions and count of `params` on one batch. */
  async evaluate(params: readonly Tensor[], x: Tensor, y: Tensor): Promise<EvalResult> {
    this.checkBatch(x, y);
    const feeds: Record<string, OrtTensor> = {};
    this.params.forEach((s, i) => (feeds[s.name] = toOrt(this.ort, params[i]!)));
    feeds["x"] = toOrt(this.ort, x);
    feeds["y"] = toOrt(this.ort, y);
    const out = await this.run("eval_step", feeds);
    return { lossSum: scalar(out[0], "eval loss"), correct: scalar(out[1], "eval correct"), count: scalar(out[2], "eval count") };
  }

  async release(): Promise<void> {
    for (const session of this.sessions.values()) await session.release?.();
    this.sessions.clear();
  }

  private checkBatch(x: Tensor, y: Tensor): void {
    for (const [t, s] of [
      [x, this.bundle.manifest.x],
      [y, this.bundle.manifest.y],
    ] as const) {
      if (t.dtype !== s.dtype || t.shape.length !== s.shape.length || !s.shape.every((d, i) => d === null || d === t.shape[i])) {
        throw new TrainingError(`${s.name} must be ${s.dtype}[batch, ${s.shape.slice(1).join(", ")}], got ${t.dtype}[${t.shape.join(", ")}]`);
      }
    }
    if (x.shape[0] !== y.shape[0]) throw new TrainingError(`x has ${x.shape[0]} rows but y has ${y.shape[0]}`);
  }

  private expectedInputs(name: GraphName): string[] {
    const m = this.bundle.manifest;
    const tail = { train_step: ["x", "y", "lr"], eval_step: ["x", "y"], infer: ["x"] }[name];
    const state = name === "train_step" ? m.optimizerState.map((s) => s.name) : [];
    return [...m.params.map((s) => s.name), ...state, ...tail];
  }

  private expectedOutputs(name: GraphName): number {
    const m = this.bundle.manifest;
    if (name === "train_step") return m.params.length + m.optimizerState.length + 1;
    return name === "eval_step" ? 3 : 1;
  }

  private async session(name: GraphName): Promise<OrtSession> {
    let session = this.sessions.get(name);
    if (session === undefined) {
      try {
        session = await this.ort.InferenceSession.create(this.bundle.graphs[name], this.options);
      } catch (error) {
        throw new BundleError(`ONNX Runtime cannot load ${name}.onnx: ${describe(error)}`, { cause: error });
      }
      const want = this.expectedInputs(name);
      if (session.inputNames.join("\u0000") !== want.join("\u0000")) {
        throw new BundleError(`${name}.onnx inputs [${session.inputNames.join(", ")}] do not match the manifest: [${want.join(", ")}]`);
      }
      if (session.outputNames.length !== this.expectedOutputs(name)) {
        throw new BundleError(`${name}.onnx has ${session.outputNames.length} outputs, expected ${this.expectedOutputs(name)}`);
      }
      this.sessions.set(name, session);
    }
    return session;
  }

  private async run(name: GraphName, feeds: Record<string, OrtTensor>): Promise<OrtTensor[]> {
    const session = await this.session(name);
    let out: Record<string, OrtTensor>;
    try {
      out = await session.run(feeds);
    } catch (error) {
      throw new TrainingError(`ONNX Runtime failed in ${name}: ${describe(error)}`, { cause: error });
    }
    return session.outputNames.map((n) => out[n]!);
  }
}

function subtract(a: Tensor, b: Tensor): Tensor {
  const out = new Float32Array(a.data.length);
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  for (let i = 0; i < out.length; i++) out[i] = x[i]! - y[i]!;
  return { dtype: "float32", shape: [...a.shape], data: out };
}
