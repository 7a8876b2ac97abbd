/**
 * A bounded HTTP cache over a Store: graphs by sha256, parameters by task and version.
 *
 * Each entry is a body and a small JSON sidecar with its ETag, sha256, size, expiry
 * (null: immutable, never revalidated) and last use. Reads verify the sha256, so a torn
 * or corrupt body is a miss, not a crash. Entries past their expiry are revalidated
 * with `If-None-Match` (a 304 costs no body bytes). The bodies are kept under `maxBytes`
 * by evicting the least recently used entries.
 */

import { sha256Hex } from "./digest.js";
import { getJson, putJson } from "./store.js";
import type { Store } from "./store.js";

const BODY = "cache/body/";
const META = "cache/meta/";

export interface CacheEntry {
  readonly body: Uint8Array;
  readonly etag: string | null;
  readonly expiresAt: number | null; // wall clock seconds; null: immutable
}

interface Meta {
  etag: string | null;
  sha256: string;
  size: number;
  expiresAt: number | null;
  usedAt: number;
}

export function isFresh(entry: CacheEntry, now: number): boolean {
  return entry.expiresAt === null || now < entry.expiresAt;
}

/** When an answer with this `Cache-Control` needs revalidation (null: never). */
export function expiry(cacheControl: string, now: number): number | null {
  const control = cacheControl.toLowerCase();
  if (control.includes("immutable")) return null;
  if (control.includes("no-cache") || control.includes("no-store")) return now;
  const match = /max-age=(\d+)/.exec(control);
  return match ? now + Number(match[1]) : now;
}

function isMeta(value: unknown): value is Meta {
  if (typeof value !== "object" || value === null) return false;
  const m = value as Record<string, unknown>;
  return typeof m["sha256"] === "string" && typeof m["size"] === "number" && typeof m["usedAt"] === "number";
}

export class HttpCache {
  constructor(
    private readonly store: Store,
    readonly maxBytes: number,
    private readonly clock: () => number = () => Date.now() / 1000,
  ) {}

  /** The verified entry for `key`, or null (missing, torn or corrupt). */
  async get(key: string): Promise<CacheEntry | null> {
    const meta = await getJson(this.store, META + key);
    const body = await this.store.get(BODY + key);
    if (!isMeta(meta) || body === null) return null;
    if (meta.sha256 !== (await sha256Hex(body))) {
      await this.delete(key);
      return null;
    }
    await putJson(this.store, META + key, { ...meta, usedAt: this.clock() });
    return { body, etag: meta.etag, expiresAt: meta.expiresAt };
  }

  /** Store `body` (the body first: a sidecar never names a missing body), then evict. */
  async put(key: string, body: Uint8Array, etag: string | null, cacheControl: string): Promise<void> {
    if (body.byteLength > this.maxBytes) return; // would evict everything and still not fit
    const now = this.clock();
    const meta: Meta = { etag, sha256: await sha256Hex(body), size: body.byteLength, expiresAt: expiry(cacheControl, now), usedAt: now };
    await this.store.put(BODY + key, body);
    await putJson(this.store, META + key, meta);
    await this.evict(key);
  }

  /** A 304 said our copy is current: move its expiry forward. */
  async refresh(key: string, cacheControl: string): Promise<void> {
    const meta = await getJson(this.store, META + key);
    if (!isMeta(meta)) return;
    await putJson(this.store, META + key, { ...meta, expiresAt: expiry(cacheControl, this.clock()) });
  }

  async delete(key: string): Promise<void> {
    await this.store.delete(META + key);
    await this.store.delete(BODY + key);
  }

  /** Bytes of all bodies (what `maxBytes` bounds). */
  async size(): Promise<number> {
    return (await this.metas()).reduce((sum, [, m]) => sum + m.size, 0);
  }

  /** Drop least recently used entries until the bodies fit in `maxBytes`. */
  async evict(keep: string | null = null): Promise<void> {
    const metas = await this.metas();
    let total = metas.reduce((sum, [, m]) => sum + m.size, 0);
    metas.sort((a, b) => a[1].usedAt - b[1].usedAt);
    for (const [key, meta] of metas) {
      if (total <= this.maxBytes) break;
      if (key === keep) continue;
      await this.delete(key);
      total -= meta.size;
    }
  }

  private async metas(): Promise<[string, Meta][]> {
    const out: [string, Meta][] = [];
    for (const full of await this.store.keys(META)) {
      const meta = await getJson(this.store, full);
      if (isMeta(meta)) out.push([full.slice(META.length), meta]);
    }
    return out;
  }
}
