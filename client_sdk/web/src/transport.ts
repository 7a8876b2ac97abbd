/**
 * How the SDK reaches the server: a small interface (tests and apps can plug their own)
 * and a `fetch` implementation that works in browsers, Web Workers and Node >= 18.
 */

import { TransportError } from "./errors.js";

export interface Response {
  readonly status: number;
  /** Header names in lower case. */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: Uint8Array;
}

export interface RequestInit {
  readonly body?: Uint8Array;
  readonly headers?: Readonly<Record<string, string>>;
  readonly timeoutS?: number;
}

export interface Transport {
  /** Send one request; throw TransportError when no answer came back. */
  request(method: string, path: string, init?: RequestInit): Promise<Response>;
}

export interface FetchTransportOptions {
  /** One whole request, body included. */
  readonly timeoutS?: number;
  /** A `fetch` to use instead of the global one. */
  readonly fetch?: typeof globalThis.fetch;
}

/**
 * `fetch` with a timeout; counts body bytes both ways. Requests bypass the browser's
 * HTTP cache (`cache: "no-store"`): the SDK keeps its own verified cache and sends its
 * own `If-None-Match`, so a 304 reaches it as a 304.
 */
export class FetchTransport implements Transport {
  private readonly base: string;
  private readonly timeoutS: number;
  private readonly fetchFn: typeof globalThis.fetch;
  bytesSent = 0;
  bytesReceived = 0;
  requests = 0;

  constructor(baseUrl: string, options: FetchTransportOptions = {}) {
    this.base = baseUrl.replace(/\/+$/, "");
    this.timeoutS = options.timeoutS ?? 60;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  async request(method: string, path: string, init: RequestInit = {}): Promise<Response> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), (init.timeoutS ?? this.timeoutS) * 1000);
    this.requests += 1;
    try {
      const answer = await this.fetchFn(this.base + path, {
        method,
        headers: init.headers ?? {},
        body: (init.body ?? null) as BodyInit | null,
        cache: "no-store",
        signal: controller.signal,
      });
      const body = new Uint8Array(await answer.arrayBuffer());
      this.bytesReceived += body.byteLength;
      this.bytesSent += init.body?.byteLength ?? 0;
      const headers = new Map<string, string>();
      answer.headers.forEach((value, name) => headers.set(name.toLowerCase(), value));
      return { status: answer.status, headers, body };
    } catch (error) {
      const why = controller.signal.aborted ? "timed out" : String((error as Error)?.message ?? error);
      throw new TransportError(`${method} ${path}: ${why}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }
}
