/**
 * Retries with exponential backoff, full jitter and the server's `Retry-After`.
 *
 * Retried: no answer at all (TransportError: refused, reset, timeout), 5xx, 429, and 409
 * `upload_in_progress` (the server is still storing an earlier attempt of the same
 * upload). Everything else is an answer and is thrown at once. The wait before attempt
 * `n + 1` is `uniform(0, min(maxDelay, base * 2**(n-1)))` ("full jitter"), never shorter
 * than the server's `Retry-After`. Sleep, clock and randomness are injectable.
 */

import { ConfigError, SdkError, ServerError, TransportError } from "./errors.js";

export type Sleep = (seconds: number) => Promise<void>;
export type Random = () => number;
export type OnRetry = (what: string, attempt: number, delayS: number, error: SdkError) => void;

export const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 500, 502, 503, 504]);
export const RETRY_CODES: ReadonlySet<string> = new Set(["upload_in_progress"]);

export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly baseDelayS: number;
  readonly maxDelayS: number;
  readonly maxElapsedS: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 8, baseDelayS: 0.5, maxDelayS: 30, maxElapsedS: 300 };
export const NO_RETRY: RetryPolicy = { ...DEFAULT_RETRY, maxAttempts: 1 };

export function checkPolicy(policy: RetryPolicy): RetryPolicy {
  if (!(policy.maxAttempts >= 1)) throw new ConfigError("retry maxAttempts must be >= 1");
  if (!(policy.baseDelayS >= 0 && policy.baseDelayS <= policy.maxDelayS)) {
    throw new ConfigError("retry delays must satisfy 0 <= baseDelayS <= maxDelayS");
  }
  if (!(policy.maxElapsedS >= 0)) throw new ConfigError("retry maxElapsedS must be >= 0");
  return policy;
}

/** Seconds to wait after `failures` consecutive failures (>= 1). */
export function backoff(policy: RetryPolicy, failures: number, random: Random, retryAfter: number | null = null): number {
  const ceiling = Math.min(policy.maxDelayS, policy.baseDelayS * 2 ** Math.max(0, failures - 1));
  const wait = random() * ceiling;
  return retryAfter === null ? wait : Math.max(wait, retryAfter);
}

/** True for failures another attempt may cure (see the module comment). */
export function isRetryable(error: unknown): boolean {
  if (error instanceof TransportError) return true;
  if (error instanceof ServerError) return RETRY_STATUSES.has(error.status) || RETRY_CODES.has(error.code);
  return false;
}

export const realSleep: Sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

const monotonic = (): number => performance.now() / 1000;

/** Runs an async call until it succeeds, fails for good, or the policy runs out. */
export class Retrier {
  constructor(
    readonly policy: RetryPolicy = NO_RETRY,
    private readonly sleep: Sleep = realSleep,
    private readonly random: Random = Math.random,
    public onRetry: OnRetry | null = null,
    private readonly clock: () => number = monotonic,
  ) {
    checkPolicy(policy);
  }

  async call<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    const started = this.clock();
    let failures = 0;
    for (;;) {
      try {
        return await attempt();
      } catch (error) {
        failures += 1;
        if (!(error instanceof SdkError) || !isRetryable(error) || failures >= this.policy.maxAttempts) throw error;
        const retryAfter = error instanceof ServerError ? error.retryAfter : null;
        const wait = backoff(this.policy, failures, this.random, retryAfter);
        if (this.clock() - started + wait > this.policy.maxElapsedS) throw error;
        this.onRetry?.(what, failures, wait, error);
        await this.sleep(wait);
      }
    }
  }
}
