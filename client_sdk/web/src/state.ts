/**
 * What survives an app restart or a page reload: the device's credentials and its open
 * session (mirrors `client_sdk/state.py`, over a Store instead of a folder).
 *
 * ```
 * state/device            {"deviceId", "deviceToken"}
 * state/session/<task>    the open session: token, version, deadline, plan, phase
 * state/update/<task>     the finished update body, until the server acknowledged it
 * ```
 *
 * Phase "training" means the device stopped while training: the session is continued
 * if its deadline allows, else dropped. Phase "trained" means the update body is
 * stored (written before the phase): it is uploaded again with the same session token,
 * and the server applies it at most once.
 */

import type { Checkin, PlanDoc } from "./api.js";
import type { SecaggTerms } from "./secagg.js";
import { getJson, putJson } from "./store.js";
import type { Store } from "./store.js";

export type Phase = "training" | "trained";

export interface DeviceCredentials {
  readonly deviceId: string;
  readonly deviceToken: string;
}

/** What the training that made the update reported. */
export interface TrainSummary {
  readonly numExamples: number;
  readonly steps: number;
  readonly loss: number;
  readonly trainS: number;
  readonly stopped: string;
  readonly evaluation: Readonly<Record<string, number>> | null;
}

/** An admitted session, as stored; `deadline` is on this device's wall clock (s). */
export interface PendingSession {
  readonly task: string;
  readonly session: string;
  readonly sessionId: string;
  readonly version: number;
  readonly deadline: number;
  readonly plan: PlanDoc;
  readonly artifacts: Readonly<Record<string, string>>;
  readonly paramsUrl: string;
  readonly evaluate: boolean;
  readonly train: boolean;
  /** The check-in's secure-aggregation terms: the update is masked (null: plain). */
  readonly secureAggregation: SecaggTerms | null;
  readonly phase: Phase;
  readonly summary: TrainSummary | null;
}

/** deadline_s is relative, so server/device clock skew does not matter. */
export function pendingFromCheckin(task: string, checkin: Extract<Checkin, { admitted: true }>, now: number): PendingSession {
  return {
    task,
    session: checkin.session,
    sessionId: checkin.sessionId,
    version: checkin.version,
    deadline: now + checkin.deadlineS,
    plan: checkin.plan,
    artifacts: checkin.artifacts,
    paramsUrl: checkin.paramsUrl,
    evaluate: checkin.evaluate,
    train: checkin.train,
    secureAggregation: checkin.secureAggregation,
    phase: "training",
    summary: null,
  };
}

function wellFormed(value: unknown): value is PendingSession {
  if (typeof value !== "object" || value === null) return false;
  const p = value as Record<string, unknown>;
  return (
    typeof p["session"] === "string" &&
    p["session"] !== "" &&
    typeof p["sessionId"] === "string" &&
    typeof p["version"] === "number" &&
    typeof p["deadline"] === "number" &&
    typeof p["plan"] === "object" &&
    p["plan"] !== null &&
    typeof p["artifacts"] === "object" &&
    p["artifacts"] !== null &&
    typeof p["paramsUrl"] === "string" &&
    (p["secureAggregation"] === undefined || p["secureAggregation"] === null || (typeof p["secureAggregation"] === "object" && typeof (p["secureAggregation"] as Record<string, unknown>)["maskKey"] === "string")) &&
    (p["phase"] === "training" || p["phase"] === "trained")
  );
}

export class ClientState {
  constructor(private readonly store: Store) {}

  async credentials(): Promise<DeviceCredentials | null> {
    const obj = (await getJson(this.store, "state/device")) as Record<string, unknown> | null;
    if (obj === null || typeof obj["deviceId"] !== "string" || typeof obj["deviceToken"] !== "string" || !obj["deviceToken"]) {
      return null;
    }
    return { deviceId: obj["deviceId"], deviceToken: obj["deviceToken"] };
  }

  async saveCredentials(credentials: DeviceCredentials): Promise<void> {
    await putJson(this.store, "state/device", credentials);
  }

  async forgetCredentials(): Promise<void> {
    await this.store.delete("state/device");
  }

  async session(task: string): Promise<PendingSession | null> {
    const obj = await getJson(this.store, `state/session/${task}`);
    if (obj === null) return null;
    if (!wellFormed(obj)) {
      await this.clearSession(task);
      return null;
    }
    if (obj.phase === "trained" && (await this.store.get(`state/update/${task}`)) === null) {
      await this.clearSession(task); // the update body was lost
      return null;
    }
    return { ...obj, secureAggregation: obj.secureAggregation ?? null }; // stored before secure aggregation: plain
  }

  async saveSession(pending: PendingSession): Promise<void> {
    await putJson(this.store, `state/session/${pending.task}`, pending);
  }

  /** Store the update body, then mark the session trained (in that order). */
  async saveUpdate(pending: PendingSession, body: Uint8Array, summary: TrainSummary): Promise<PendingSession> {
    await this.store.put(`state/update/${pending.task}`, body);
    const trained: PendingSession = { ...pending, phase: "trained", summary };
    await this.saveSession(trained);
    return trained;
  }

  async update(task: string): Promise<Uint8Array | null> {
    return this.store.get(`state/update/${task}`);
  }

  async clearSession(task: string): Promise<void> {
    await this.store.delete(`state/session/${task}`);
    await this.store.delete(`state/update/${task}`);
  }
}
