/**
 * Node wiring: onnxruntime-node (native, one thread), a folder as the device's store.
 *
 * ```ts
 * import { createNodeClient } from "asyncfl-web/node";
 * const client = await createNodeClient({ serverUrl, task, credentials, data, storage: "./device" });
 * ```
 */

import { createHash } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, unlink } from "node:fs/promises";
import { join } from "node:path";

import { Client } from "./client.js";
import type { ClientConfig } from "./client.js";
import { StorageError } from "./errors.js";
import type { OrtModule } from "./ort.js";
import type { Store } from "./store.js";

export * from "./index.js";

/** One file per key in a folder; writes are atomic (temp file, fsync, rename). */
export class FileStore implements Store {
  private ready: Promise<unknown> | null = null;

  constructor(readonly root: string) {}

  private file(key: string): string {
    // readable prefix + a digest of the exact key: distinct keys never share a file
    const safe = key.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 80);
    return join(this.root, `${safe}-${createHash("sha256").update(key).digest("hex").slice(0, 12)}.kv`);
  }

  private async folder(): Promise<void> {
    this.ready ??= mkdir(this.root, { recursive: true });
    try {
      await this.ready;
    } catch (error) {
      this.ready = null;
      throw new StorageError(`cannot create ${this.root}: ${String(error)}`, { cause: error });
    }
  }

  async get(key: string): Promise<Uint8Array | null> {
    try {
      const raw = await readFile(this.file(key));
      const length = raw.readUInt32LE(0);
      if (raw.subarray(4, 4 + length).toString() !== key) return null;
      return new Uint8Array(raw.subarray(4 + length));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT" || error instanceof RangeError) return null;
      throw new StorageError(`cannot read ${key}: ${String(error)}`, { cause: error });
    }
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    await this.folder();
    const path = this.file(key);
    const tmp = `${path}.${process.pid}.tmp`;
    const name = Buffer.from(key);
    const head = Buffer.alloc(4);
    head.writeUInt32LE(name.length, 0);
    try {
      const handle = await open(tmp, "w", 0o600);
      try {
        await handle.writeFile(Buffer.concat([head, name, value]));
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, path);
    } catch (error) {
      throw new StorageError(`cannot write ${key}: ${String(error)}`, { cause: error });
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await unlink(this.file(key));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw new StorageError(`cannot delete ${key}: ${String(error)}`, { cause: error });
    }
  }

  async keys(prefix: string): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw new StorageError(`cannot list ${this.root}: ${String(error)}`, { cause: error });
    }
    const out: string[] = [];
    for (const name of names.filter((n) => n.endsWith(".kv"))) {
      try {
        const raw = await readFile(join(this.root, name));
        const key = raw.subarray(4, 4 + raw.readUInt32LE(0)).toString();
        if (key.startsWith(prefix)) out.push(key);
      } catch {
        // deleted meanwhile, or torn: not a key
      }
    }
    return out;
  }
}

/** Session options for onnxruntime-node: one intra-op thread, sequential. */
export const NODE_SESSION_OPTIONS = {
  executionProviders: ["cpu"],
  intraOpNumThreads: 1,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
  logSeverityLevel: 3,
} as const;

/** onnxruntime-node, loaded on first use (it is an optional peer dependency). */
export async function loadNodeOrt(): Promise<OrtModule> {
  const name = "onnxruntime-node";
  return (await import(name)) as OrtModule;
}

export type NodeClientConfig = Omit<ClientConfig, "store" | "ort"> & {
  /** A folder for credentials, the open session and the cache. */
  readonly storage: string;
  readonly ort?: OrtModule;
};

export async function createNodeClient(config: NodeClientConfig): Promise<Client> {
  const { storage, ort, ...rest } = config;
  return new Client({
    ...rest,
    store: new FileStore(storage),
    ort: ort ?? (await loadNodeOrt()),
    sessionOptions: config.sessionOptions ?? NODE_SESSION_OPTIONS,
  });
}
