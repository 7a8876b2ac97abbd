/**
 * What one `Client.runOnce()` did: a closed set of results, told apart by `kind`.
 *
 * ```ts
 * const result = await client.runOnce();
 * switch (result.kind) {
 *   case "trained":      // trained and the server acknowledged the update
 *   case "no_slot":      // the task is full (or paused): come back after result.retryAfter
 *   case "not_eligible": // the device may not train now; nothing uploaded
 *   case "rejected":     // the server refused the update (result.reason is its code)
 *   case "evaluated":    // an evaluation-only session was reported
 * }
 * ```
 */

export interface Trained {
  readonly kind: "trained";
  readonly version: number;
  readonly numExamples: number;
  readonly steps: number;
  readonly loss: number;
  readonly trainS: number;
  /** completed | max_steps | time_budget (the plan's budget or the session deadline) */
  readonly stopped: string;
  readonly updateId: string;
  readonly staleness: number | null;
  /** A retry found the update already accepted: it counts once. */
  readonly duplicate: boolean;
  /** The session (or its update) survived a restart or a page reload. */
  readonly resumed: boolean;
  readonly evaluation: Readonly<Record<string, number>> | null;
}

export interface Evaluated {
  readonly kind: "evaluated";
  readonly version: number;
  readonly metrics: Readonly<Record<string, number>>;
}

export interface NotEligible {
  readonly kind: "not_eligible";
  readonly reasons: readonly string[];
  /** It stopped mid-training and uploaded nothing. */
  readonly duringTraining: boolean;
}

export interface NoSlot {
  readonly kind: "no_slot";
  readonly retryAfter: number;
  readonly reason: string;
}

export interface Rejected {
  readonly kind: "rejected";
  /** The server's stable code (too_stale, session_expired, ...) or deadline_too_close. */
  readonly reason: string;
  /** 0 when the client decided. */
  readonly status: number;
  readonly message: string;
}

export type RoundResult = Trained | Evaluated | NotEligible | NoSlot | Rejected;
