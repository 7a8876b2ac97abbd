/**
 * Errors raised by the web SDK; the same tree as the Python SDK's `client_sdk.errors`.
 *
 * ```
 * SdkError
 * ├── WireFormatError   a body or tensor does not follow the wire format
 * ├── BundleError       an artifact bundle is missing, corrupt or inconsistent
 * ├── TrainingError     ONNX Runtime failed while training or evaluating
 * ├── TransportError    no answer from the server (connection, timeout)
 * ├── ServerError       the server answered with an error (code, status)
 * ├── StorageError      the device's storage (IndexedDB, files) failed
 * └── ConfigError       the client was set up wrongly (options, credentials, data)
 * ```
 */

/** Root of every error the SDK raises on purpose. */
export class SdkError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A message or tensor does not follow the asyncfl wire format. */
export class WireFormatError extends SdkError {}

/** An artifact bundle is missing, corrupt (sha256 mismatch) or inconsistent. */
export class BundleError extends SdkError {}

/** ONNX Runtime failed while running a training or evaluation graph. */
export class TrainingError extends SdkError {}

/** The request got no answer: connection refused or reset, timeout. */
export class TransportError extends SdkError {}

/** The server answered with an error document `{"error": {"code", "message"}}`. */
export class ServerError extends SdkError {
  readonly status: number;
  readonly code: string;
  readonly serverMessage: string;
  /** Seconds from the answer's `Retry-After`, if it had one. */
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, retryAfter: number | null = null) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.serverMessage = message;
    this.retryAfter = retryAfter;
  }
}

/** The device's storage (IndexedDB, the filesystem) failed. */
export class StorageError extends SdkError {}

/** The client was configured wrongly: bad options, missing credentials, unusable data. */
export class ConfigError extends SdkError {}

/** A short description of anything thrown (for logs and events). */
export function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
