/**
 * Where a device keeps what survives a restart or a page reload: a small async
 * key-value interface with byte values. Implementations: MemoryStore (tests, ephemeral
 * devices), FileStore (Node, `node.ts`) and IndexedDbStore (browsers, `browser.ts`).
 * A `put` is atomic: a crash leaves the old value or the new one.
 */

export interface Store {
  get(key: string): Promise<Uint8Array | null>;
  put(key: string, value: Uint8Array): Promise<void>;
  delete(key: string): Promise<void>;
  /** Every key that starts with `prefix`. */
  keys(prefix: string): Promise<string[]>;
}

export class MemoryStore implements Store {
  private readonly items = new Map<string, Uint8Array>();

  async get(key: string): Promise<Uint8Array | null> {
    const value = this.items.get(key);
    return value === undefined ? null : value.slice();
  }

  async put(key: string, value: Uint8Array): Promise<void> {
    this.items.set(key, value.slice());
  }

  async delete(key: string): Promise<void> {
    this.items.delete(key);
  }

  async keys(prefix: string): Promise<string[]> {
    return [...this.items.keys()].filter((k) => k.startsWith(prefix));
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function getJson(store: Store, key: string): Promise<unknown> {
  const raw = await store.get(key);
  if (raw === null) return null;
  try {
    return JSON.parse(decoder.decode(raw));
  } catch {
    return null; // a torn or foreign value reads as missing
  }
}

export async function putJson(store: Store, key: string, value: unknown): Promise<void> {
  await store.put(key, encoder.encode(JSON.stringify(value)));
}
