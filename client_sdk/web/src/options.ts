/** How a Client is set up: credentials and tunable options (mirrors `client_sdk/options.py`). */

import { ConfigError } from "./errors.js";
import { DEFAULT_RETRY, checkPolicy } from "./retry.js";
import type { RetryPolicy } from "./retry.js";
import { SecaggError, checkTrustAnchor } from "./secagg.js";
import type { TrustAnchor } from "./secagg.js";

/**
 * How the device proves who it is. With an `enrollmentKey` the client enrolls once and
 * keeps the device token in its store; a `deviceToken` issued out of band is used as
 * is. `deviceInfo` is sent at enrollment only.
 */
export interface Credentials {
  readonly enrollmentKey?: string;
  readonly deviceToken?: string;
  readonly deviceInfo?: Readonly<Record<string, unknown>>;
}

export interface ClientOptions {
  /** One whole request, body included. */
  readonly requestTimeoutS: number;
  readonly retry: RetryPolicy;
  /** Graphs + parameters in the device's store. */
  readonly cacheMaxBytes: number;
  /** Local L2 clipping of the update before upload. */
  readonly clipNorm: number | null;
  /**
   * Secure aggregation: how this app knows the mask service's key (pinned, or signed by
   * an operator key the app ships). Without it the device takes part in plain tasks
   * only; a secure-aggregation task's session is given back (`secagg_untrusted`).
   */
  readonly secaggTrust: TrustAnchor | null;
  /** Stop training this long before the session deadline. */
  readonly uploadMarginS: number;
  /** A session with less time left than this is not trained. */
  readonly minTrainS: number;
  /** Steps between progress events. */
  readonly progressEvery: number;
  readonly evalBatchSize: number;
  /** runForever: waits between rounds. */
  readonly roundIntervalS: number;
  readonly ineligiblePollS: number;
  readonly maxErrorBackoffS: number;
}

export const DEFAULT_OPTIONS: ClientOptions = {
  requestTimeoutS: 60,
  retry: DEFAULT_RETRY,
  cacheMaxBytes: 64 * 1024 * 1024,
  clipNorm: null,
  secaggTrust: null,
  uploadMarginS: 10,
  minTrainS: 1,
  progressEvery: 10,
  evalBatchSize: 256,
  roundIntervalS: 60,
  ineligiblePollS: 60,
  maxErrorBackoffS: 600,
};

export function resolveOptions(partial: Partial<ClientOptions> = {}): ClientOptions {
  const options: ClientOptions = { ...DEFAULT_OPTIONS, ...partial, retry: { ...DEFAULT_RETRY, ...partial.retry } };
  for (const name of ["requestTimeoutS", "uploadMarginS", "minTrainS", "roundIntervalS", "ineligiblePollS", "maxErrorBackoffS"] as const) {
    const value = options[name];
    if (!(Number.isFinite(value) && value >= 0)) throw new ConfigError(`${name} must be a finite number >= 0, got ${value}`);
  }
  if (!(options.progressEvery >= 1 && options.evalBatchSize >= 1)) throw new ConfigError("progressEvery and evalBatchSize must be >= 1");
  if (!(options.cacheMaxBytes >= 0)) throw new ConfigError("cacheMaxBytes must be >= 0");
  if (options.clipNorm !== null && !(options.clipNorm > 0)) throw new ConfigError(`clipNorm must be > 0, got ${options.clipNorm}`);
  if (options.secaggTrust !== null) {
    try {
      checkTrustAnchor(options.secaggTrust);
    } catch (error) {
      if (error instanceof SecaggError) throw new ConfigError(`secaggTrust: ${error.message}`, { cause: error });
      throw error;
    }
  }
  checkPolicy(options.retry);
  return options;
}

export function checkCredentials(credentials: Credentials): Credentials {
  if (!credentials.enrollmentKey && !credentials.deviceToken) throw new ConfigError("credentials need an enrollmentKey or a deviceToken");
  return credentials;
}
