/** A Store in IndexedDB (browsers and Web Workers): one database per device. */

import { StorageError } from "./errors.js";
import type { Store } from "./store.js";

const OBJECTS = "kv";

function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new StorageError(`IndexedDB: ${String(request.error?.message ?? request.error)}`));
  });
}

export class IndexedDbStore implements Store {
  private db: Promise<IDBDatabase> | null = null;

  /** `name`: the database (one per device on the page, e.g. "asyncfl-device-0"). */
  constructor(readonly name: string) {}

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise<IDBDatabase>((resolve, reject) => {
      if (typeof indexedDB === "undefined") {
        reject(new StorageError("IndexedDB is not available here"));
        return;
      }
      const request = indexedDB.open(this.name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(OBJECTS);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(new StorageError(`cannot open IndexedDB ${this.name}: ${String(request.error?.message)}`));
      request.onblocked = () => reject(new StorageError(`IndexedDB ${this.name} is blocked by another tab`));
    }).catch((error: unknown) => {
      this.db = null;
      throw error;
    });
    return this.db;
  }

  private async objects(mode: IDBTransactionMode): Promise<IDBObjectStore> {
    return (await this.open()).transaction(OBJECTS, mode).objectStore(OBJECTS);
  }

  async get(key: string): Promise<Uint8Array | null> {
    const value: unknown = await done((await this.objects("readonly")).get(key));
    return value instanceof Uint8Array ? value : null;
  }

  /** Resolves once the transaction committed (durable as IndexedDB makes it). */
  async put(key: string, value: Uint8Array): Promise<void> {
    const objects = await this.objects("readwrite");
    const committed = new Promise<void>((resolve, reject) => {
      objects.transaction.oncomplete = () => resolve();
      objects.transaction.onerror = () => reject(new StorageError(`IndexedDB write of ${key} failed`));
      objects.transaction.onabort = () => reject(new StorageError(`IndexedDB write of ${key} was aborted (quota?)`));
    });
    objects.put(value.slice(), key);
    await committed;
  }

  async delete(key: string): Promise<void> {
    await done((await this.objects("readwrite")).delete(key));
  }

  async keys(prefix: string): Promise<string[]> {
    const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
    const keys = await done((await this.objects("readonly")).getAllKeys(range));
    return keys.map(String);
  }

  close(): void {
    void this.db?.then((db) => db.close());
    this.db = null;
  }
}
