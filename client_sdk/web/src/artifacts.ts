/**
 * Fetch a session's graphs and parameters through the cache, verified (mirrors
 * `client_sdk/artifacts.py`).
 *
 * Graphs are content-addressed: the body must hash to the digest the check-in named,
 * and the bundle check ties every graph to the manifest. A cached, fresh entry costs no
 * request at all, so a second round (or a reloaded page) downloads no graph bytes. A
 * failed verification drops the entry and fetches once more before giving up.
 */

import type { ServerApi } from "./api.js";
import type { Bundle, Manifest } from "./bundle.js";
import { GRAPH_NAMES, bundleFromParts, decodeParams } from "./bundle.js";
import type { HttpCache } from "./cache.js";
import { isFresh } from "./cache.js";
import { sha256Hex } from "./digest.js";
import { BundleError } from "./errors.js";
import type { OrtModule } from "./ort.js";
import { Trainer } from "./trainer.js";
import type { Tensor } from "./wire.js";

export const PARTS: readonly string[] = ["manifest", ...GRAPH_NAMES];

/** Body bytes downloaded, by kind (what the cache saved shows up as zeros). */
export interface Traffic {
  graphBytes: number;
  paramBytes: number;
  requests: number;
}

export class ArtifactStore {
  private trainerFor: { digest: string; trainer: Trainer } | null = null;
  readonly traffic: Traffic = { graphBytes: 0, paramBytes: 0, requests: 0 };

  constructor(
    private readonly api: ServerApi,
    private readonly cache: HttpCache,
    private readonly token: () => Promise<string>,
    private readonly ort: OrtModule,
    private readonly sessionOptions: object,
    private readonly clock: () => number,
  ) {}

  /** The trainer for the bundle `artifacts` names (digests by part). */
  async trainer(artifacts: Readonly<Record<string, string>>): Promise<Trainer> {
    const digests: Record<string, string> = {};
    for (const part of PARTS) {
      const digest = artifacts[part];
      if (typeof digest !== "string") throw new BundleError(`check-in named no artifact ${part}`);
      digests[part] = digest;
    }
    if (this.trainerFor !== null && this.trainerFor.digest === digests["manifest"]) return this.trainerFor.trainer;
    const parts: Record<string, Uint8Array> = {};
    for (const part of PARTS) parts[part] = await this.blob(digests[part]!);
    let bundle: Bundle;
    try {
      bundle = await bundleFromParts(parts["manifest"]!, parts);
    } catch (error) {
      for (const digest of Object.values(digests)) await this.cache.delete(`graph-${digest}`); // cannot tell which part lied
      throw error;
    }
    const trainer = await Trainer.create(this.ort, bundle, this.sessionOptions);
    await this.trainerFor?.trainer.release();
    this.trainerFor = { digest: digests["manifest"]!, trainer };
    return trainer;
  }

  /** The parameters of `version`, decoded and checked against the manifest. */
  async params(task: string, version: number, url: string, manifest: Manifest): Promise<Tensor[]> {
    const key = `params-${task}-${version}`;
    try {
      return decodeParams(await this.get(key, url, "params"), manifest.params);
    } catch (error) {
      if (!(error instanceof BundleError)) throw error;
      await this.cache.delete(key);
      return decodeParams(await this.get(key, url, "params"), manifest.params);
    }
  }

  async close(): Promise<void> {
    await this.trainerFor?.trainer.release();
    this.trainerFor = null;
  }

  private async blob(digest: string): Promise<Uint8Array> {
    const key = `graph-${digest}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      const body = await this.get(key, `/v1/artifacts/${digest}`, "graph");
      if ((await sha256Hex(body)) === digest) return body;
      console.warn(`asyncfl: artifact ${digest.slice(0, 12)} failed its sha256 check; fetching again`);
      await this.cache.delete(key);
    }
    throw new BundleError(`artifact ${digest} does not match its sha256 after two downloads`);
  }

  private async get(key: string, path: string, kind: "graph" | "params"): Promise<Uint8Array> {
    const entry = await this.cache.get(key);
    if (entry !== null && isFresh(entry, this.clock())) return entry.body;
    const fetched = await this.api.fetch(path, await this.token(), entry?.etag ?? null);
    this.traffic.requests += 1;
    if (fetched.body === null) {
      if (entry === null) throw new BundleError(`${path}: server answered 304 to an unconditional request`);
      await this.cache.refresh(key, fetched.cacheControl);
      return entry.body;
    }
    if (kind === "graph") this.traffic.graphBytes += fetched.body.byteLength;
    else this.traffic.paramBytes += fetched.body.byteLength;
    await this.cache.put(key, fetched.body, fetched.etag, fetched.cacheControl);
    return fetched.body;
  }
}
