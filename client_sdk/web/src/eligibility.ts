/**
 * When a device may train: its state (from a provider the app feeds) and a policy over
 * that state (mirrors `client_sdk/eligibility.py`).
 *
 * The client asks the provider before checking in and between training steps, so
 * `current()` must be cheap. A field the provider does not know is `null`, and an
 * unknown value fails a check the policy requires: the SDK never trains on a guess.
 * The default policy follows Papaya: charging, on an unmetered network, idle, battery
 * at least 20%. Browsers report little of this; see `browserHints()` in `browser.ts`.
 */

import { ConfigError } from "./errors.js";

export interface DeviceState {
  readonly charging: boolean | null;
  /** Wi-Fi or ethernet rather than a metered cellular link. */
  readonly unmetered: boolean | null;
  /** Screen off / page hidden / user away. */
  readonly idle: boolean | null;
  /** Charge level in [0, 1]. */
  readonly battery: number | null;
}

export const UNKNOWN_STATE: DeviceState = { charging: null, unmetered: null, idle: null, battery: null };

export interface DeviceStateProvider {
  current(): DeviceState;
}

/** A provider the app updates from platform callbacks: `state.update({charging: false})`. */
export class ManualDeviceState implements DeviceStateProvider {
  private state: DeviceState;

  constructor(initial: Partial<DeviceState> = {}) {
    this.state = { ...UNKNOWN_STATE, ...initial };
  }

  current(): DeviceState {
    return this.state;
  }

  update(fields: Partial<DeviceState>): DeviceState {
    this.state = { ...this.state, ...fields };
    return this.state;
  }
}

export interface EligibilityPolicy {
  readonly requireCharging: boolean;
  readonly requireUnmetered: boolean;
  readonly requireIdle: boolean;
  readonly minBattery: number | null;
}

export const DEFAULT_POLICY: EligibilityPolicy = { requireCharging: true, requireUnmetered: true, requireIdle: true, minBattery: 0.2 };

/** No requirement (desktops, servers, tests). */
export const ALWAYS: EligibilityPolicy = { requireCharging: false, requireUnmetered: false, requireIdle: false, minBattery: null };

export function checkPolicy(policy: EligibilityPolicy): EligibilityPolicy {
  if (policy.minBattery !== null && !(policy.minBattery >= 0 && policy.minBattery <= 1)) {
    throw new ConfigError(`minBattery must be in [0, 1], got ${policy.minBattery}`);
  }
  return policy;
}

/** Why the device may not train now (empty: it may), e.g. `["not_charging"]`. */
export function ineligibleReasons(policy: EligibilityPolicy, state: DeviceState): string[] {
  const out: string[] = [];
  if (policy.requireCharging && state.charging !== true) out.push(state.charging === false ? "not_charging" : "charging_unknown");
  if (policy.requireUnmetered && state.unmetered !== true) out.push(state.unmetered === false ? "metered_network" : "network_unknown");
  if (policy.requireIdle && state.idle !== true) out.push(state.idle === false ? "not_idle" : "idle_unknown");
  if (policy.minBattery !== null) {
    if (state.battery === null) out.push("battery_unknown");
    else if (state.battery < policy.minBattery) out.push("battery_low");
  }
  return out;
}
