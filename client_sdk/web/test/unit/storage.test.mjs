// The cache and the session state over a store: verified reads, expiry, LRU eviction,
// and what a restart finds; the file store's atomic, prefix-listed keys.
import assert from "node:assert/strict";
import { mkdtemp, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { ClientState, FileStore, HttpCache, MemoryStore, expiry, isFresh } from "../../dist/esm/node.js";

const bytes = (n, v = 1) => new Uint8Array(n).fill(v);

test("a cache entry comes back verified, and a corrupted body reads as a miss", async () => {
  const store = new MemoryStore();
  const cache = new HttpCache(store, 1000);
  await cache.put("graph-a", bytes(10), '"a"', "public, max-age=31536000, immutable");
  const entry = await cache.get("graph-a");
  assert.deepEqual([entry.etag, entry.expiresAt, entry.body.length], ['"a"', null, 10]);
  await store.put("cache/body/graph-a", bytes(10, 2));
  assert.equal(await cache.get("graph-a"), null);
  assert.deepEqual(await store.keys("cache/"), []);
});

test("Cache-Control decides when an entry must be revalidated", () => {
  assert.equal(expiry("public, max-age=31536000, immutable", 100), null);
  assert.equal(expiry("max-age=60", 100), 160);
  assert.equal(expiry("no-cache", 100), 100);
  assert.equal(expiry("", 100), 100);
  assert.ok(isFresh({ expiresAt: null }, 1e12));
  assert.ok(!isFresh({ expiresAt: 160 }, 160));
});

test("the least recently used entries go first when the cache is over its bound", async () => {
  let now = 0;
  const cache = new HttpCache(new MemoryStore(), 25, () => now);
  for (const key of ["a", "b", "c"]) {
    now += 1;
    await cache.put(key, bytes(10), null, "immutable");
    if (key === "b") {
      now += 1;
      await cache.get("a"); // a is now more recent than b
    }
  }
  assert.ok((await cache.get("a")) !== null);
  assert.equal(await cache.get("b"), null);
  assert.ok((await cache.get("c")) !== null);
  assert.ok((await cache.size()) <= 25);
  await cache.put("huge", bytes(26), null, "immutable"); // larger than the bound: not kept
  assert.equal(await cache.get("huge"), null);
});

const PENDING = {
  task: "t",
  session: "tok",
  sessionId: "sid",
  version: 2,
  deadline: 1e10,
  plan: { lr: 0.1, batch_size: 8 },
  artifacts: {},
  paramsUrl: "/p",
  evaluate: false,
  train: true,
  secureAggregation: null,
  phase: "training",
  summary: null,
};

test("a session survives a new ClientState on the same store, phase by phase", async () => {
  const store = new MemoryStore();
  await new ClientState(store).saveSession(PENDING);
  assert.deepEqual(await new ClientState(store).session("t"), PENDING);
  const summary = { numExamples: 8, steps: 1, loss: 1, trainS: 0.1, stopped: "completed", evaluation: null };
  await new ClientState(store).saveUpdate(PENDING, bytes(5), summary);
  const again = new ClientState(store);
  assert.equal((await again.session("t")).phase, "trained");
  assert.deepEqual(await again.update("t"), bytes(5));
  await again.clearSession("t");
  assert.equal(await again.session("t"), null);
});

test("a secure-aggregation session keeps its terms; one stored before them reads as plain", async () => {
  const store = new MemoryStore();
  const terms = { maskKey: "ab".repeat(32), maskKeySignature: null, fixedPoint: { clipNorm: 5, maxWeight: 4096, maxUpdates: 6 }, threshold: 3 };
  await new ClientState(store).saveSession({ ...PENDING, secureAggregation: terms });
  assert.deepEqual((await new ClientState(store).session("t")).secureAggregation, terms);
  const { secureAggregation: _, ...older } = PENDING;
  await new ClientState(store).saveSession(older);
  assert.deepEqual(await new ClientState(store).session("t"), PENDING);
});

test("a trained session without its update body, or a malformed one, is dropped", async () => {
  const store = new MemoryStore();
  const state = new ClientState(store);
  await state.saveSession({ ...PENDING, phase: "trained" });
  assert.equal(await state.session("t"), null);
  await store.put("state/session/t", new TextEncoder().encode('{"session": 5}'));
  assert.equal(await state.session("t"), null);
  assert.deepEqual(await store.keys("state/session/"), []);
  await store.put("state/device", new TextEncoder().encode("{torn"));
  assert.equal(await state.credentials(), null);
});

test("the file store keeps values across instances, lists by prefix, and ignores strays", async () => {
  const root = await mkdtemp(join(tmpdir(), "asyncfl-web-"));
  const a = new FileStore(join(root, "device"));
  await a.put("cache/body/x", bytes(3));
  await a.put("cache/meta/x", bytes(2));
  await a.put("state/device", bytes(1));
  const b = new FileStore(join(root, "device"));
  assert.deepEqual(await b.get("cache/body/x"), bytes(3));
  assert.deepEqual((await b.keys("cache/")).sort(), ["cache/body/x", "cache/meta/x"]);
  await writeFile(join(root, "device", "stray.kv"), "x");
  assert.deepEqual((await b.keys("state/")).sort(), ["state/device"]);
  await b.delete("cache/body/x");
  await b.delete("cache/body/x");
  assert.equal(await b.get("cache/body/x"), null);
  assert.ok((await readdir(join(root, "device"))).every((n) => !n.endsWith(".tmp")));
  assert.equal(await new FileStore(join(root, "none")).get("k"), null);
});
