/**
 * What the client reports to the app while it works: one callback, typed events.
 *
 * - `checkin`: admitted, version, sessionId, deadlineS | retryAfter, reason
 * - `resume`: sessionId, phase ("training" | "trained"), action ("upload" | "continue" | "drop")
 * - `progress`: steps, examples, elapsedS (every `progressEvery` steps, and at the end)
 * - `evaluation`: version, loss, accuracy, num_examples
 * - `upload`: version, numExamples, bytes, updateId, duplicate
 * - `not_eligible`: reasons, duringTraining
 * - `retry`: what, attempt, delayS, error
 * - `secagg_refused`: sessionId, error (a secure-aggregation task whose mask service key
 *   this device does not trust: nothing was uploaded, the session was given back)
 * - `error`: error (message), type
 *
 * An exception in the callback is swallowed (and logged): observing the client must
 * never break it.
 */

export type EventKind = "checkin" | "resume" | "progress" | "evaluation" | "upload" | "not_eligible" | "retry" | "secagg_refused" | "error";

export interface SdkEvent {
  readonly kind: EventKind;
  readonly task: string;
  readonly data: Readonly<Record<string, unknown>>;
}

export type EventCallback = (event: SdkEvent) => void;

export class Emitter {
  constructor(
    private readonly task: string,
    private readonly callback: EventCallback | null,
  ) {}

  emit(kind: EventKind, data: Record<string, unknown> = {}): void {
    if (this.callback === null) return;
    try {
      this.callback({ kind, task: this.task, data });
    } catch (error) {
      console.warn(`asyncfl: the event callback failed on a ${kind} event`, error);
    }
  }
}
