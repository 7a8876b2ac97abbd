// Manifests and data sources: fuzzed manifests fail only with BundleError; shuffles are
// permutations; batches cover every row once.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ArrayDataSource, BundleError, ConfigError, paramsMismatch, parseManifest, permutation, planFrom, seededRandom } from "../../dist/esm/index.js";

const SHA = "a".repeat(64);
const MANIFEST = {
  format_version: 1,
  model: "logreg",
  task_type: "classification",
  params: [{ name: "w", shape: [10, 64], dtype: "float32" }, { name: "b", shape: [10], dtype: "float32" }],
  x: { name: "x", shape: [null, 64], dtype: "float32" },
  y: { name: "y", shape: [null], dtype: "int64" },
  optimizer: "sgd",
  optimizer_state: [],
  graphs: { train_step: SHA, eval_step: SHA, infer: SHA },
};
const encode = (obj) => new TextEncoder().encode(JSON.stringify(obj));

test("a manifest is parsed with its specs", () => {
  const m = parseManifest(encode(MANIFEST));
  assert.deepEqual(m.params.map((p) => p.name), ["w", "b"]);
  assert.deepEqual(m.x.shape, [null, 64]);
  assert.equal(paramsMismatch([{ dtype: "float32", shape: [10, 64] }, { dtype: "float32", shape: [10] }], m.params), null);
  assert.match(paramsMismatch([{ dtype: "float64", shape: [10, 64] }, { dtype: "float32", shape: [10] }], m.params), /parameter w/);
});

test("fuzzed manifests fail only with BundleError", () => {
  const random = seededRandom(9);
  const junk = [null, 1, "x", [], {}, [null], [-1], true, "f".repeat(64)];
  for (let i = 0; i < 2000; i++) {
    const m = structuredClone(MANIFEST);
    const keys = Object.keys(m);
    const key = keys[Math.floor(random() * keys.length)];
    if (random() < 0.3) m.params[0].shape = structuredClone(junk[Math.floor(random() * junk.length)]);
    if (random() < 0.5) m[key] = structuredClone(junk[Math.floor(random() * junk.length)]);
    else delete m[key];
    const text = encode(m);
    const body = random() < 0.2 ? text.subarray(0, Math.floor(random() * text.length)) : text;
    try {
      parseManifest(body);
    } catch (error) {
      assert.ok(error instanceof BundleError, `${error?.name}: ${error?.message}`);
    }
  }
});

test("a seeded permutation is a permutation, and the same seed gives the same order", () => {
  for (const n of [0, 1, 7, 100]) {
    const order = Array.from(permutation(n, 42));
    assert.deepEqual([...order].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
    assert.deepEqual(order, Array.from(permutation(n, 42)));
  }
});

test("one pass of batches yields every row exactly once", () => {
  const n = 23;
  const x = { dtype: "float32", shape: [n, 2], data: Float32Array.from({ length: 2 * n }, (_, i) => i) };
  const y = { dtype: "int64", shape: [n], data: BigInt64Array.from({ length: n }, (_, i) => BigInt(i)) };
  const data = new ArrayDataSource(x, y);
  const seen = [];
  const sizes = [];
  for (const batch of data.batches(5, 3)) {
    sizes.push(batch.x.shape[0]);
    for (let r = 0; r < batch.x.shape[0]; r++) {
      assert.equal(batch.x.data[2 * r], 2 * Number(batch.y.data[r])); // rows stay paired
      seen.push(Number(batch.y.data[r]));
    }
  }
  assert.deepEqual(sizes, [5, 5, 5, 5, 3]);
  assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  assert.throws(() => new ArrayDataSource(x, { ...y, shape: [n - 1], data: y.data.subarray(1) }), ConfigError);
});

test("the plan's time budget is capped by what the session leaves", () => {
  assert.equal(planFrom({ lr: 0.1, batch_size: 16, time_budget_s: 100 }, 30).timeBudgetS, 30);
  assert.equal(planFrom({ lr: 0.1, batch_size: 16, time_budget_s: 10 }, 30).timeBudgetS, 10);
  assert.equal(planFrom({ lr: 0.1, batch_size: 16 }, Infinity).timeBudgetS, null);
  assert.throws(() => planFrom({ lr: -1, batch_size: 16 }, 10), ConfigError);
  assert.throws(() => planFrom({ lr: 0.1, batch_size: 0 }, 10), ConfigError);
});
