// The wire format: round trips for every dtype, and fuzzed bodies that only ever fail
// with WireFormatError (never a RangeError, a TypeError or a hang).
import assert from "node:assert/strict";
import { test } from "node:test";

import { WireFormatError, decodeTensor, decodeTensors, encodeTensor, numel, pack, seededRandom, unpack } from "../../dist/esm/index.js";

const DTYPES = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  int64: BigInt64Array,
  int32: Int32Array,
  int8: Int8Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

function randomTensor(random, dtype) {
  const rank = Math.floor(random() * 4);
  const shape = Array.from({ length: rank }, () => Math.floor(random() * 5));
  const Ctor = DTYPES[dtype];
  const data = new Ctor(numel(shape));
  for (let i = 0; i < data.length; i++) {
    data[i] = dtype === "int64" ? BigInt(Math.floor((random() - 0.5) * 2 ** 40)) : dtype === "bool" ? (random() < 0.5 ? 1 : 0) : (random() - 0.5) * 200;
  }
  return { dtype, shape, data };
}

test("every dtype survives encode, msgpack and decode unchanged", () => {
  const random = seededRandom(1);
  for (let i = 0; i < 400; i++) {
    const dtype = Object.keys(DTYPES)[i % 8];
    const tensor = randomTensor(random, dtype);
    const back = decodeTensor(unpack(pack(encodeTensor(tensor))));
    assert.equal(back.dtype, tensor.dtype);
    assert.deepEqual(back.shape, tensor.shape);
    assert.deepEqual(Array.from(back.data), Array.from(tensor.data));
  }
});

test("a decoded tensor owns aligned memory even when its bin sits at an odd offset", () => {
  const body = pack({ pad: "x", t: encodeTensor({ dtype: "float64", shape: [3], data: new Float64Array([1, 2, 3]) }) });
  const copy = new Uint8Array(body.byteLength + 1).subarray(1);
  copy.set(body);
  const tensor = decodeTensor(unpack(copy).t);
  assert.equal(tensor.data.byteOffset % 8, 0);
  assert.deepEqual(Array.from(tensor.data), [1, 2, 3]);
});

test("malformed tensor maps are refused with WireFormatError", () => {
  const good = encodeTensor({ dtype: "float32", shape: [2, 2], data: new Float32Array(4) });
  const bad = [
    null,
    [],
    "tensor",
    { ...good, dtype: "complex64" },
    { ...good, shape: [2, -1] },
    { ...good, shape: [2, 2.5] },
    { ...good, shape: "2x2" },
    { ...good, shape: [1, 1, 1, 1, 1, 1, 1, 1, 1] },
    { ...good, shape: [2, 3] },
    { ...good, shape: [2 ** 40, 2 ** 20] },
    { ...good, data: "bytes" },
    { ...good, data: good.data.subarray(1) },
  ];
  for (const value of bad) assert.throws(() => decodeTensor(value), WireFormatError, JSON.stringify(value));
  assert.throws(() => decodeTensors({}), WireFormatError);
});

test("fuzzed bodies fail only with WireFormatError", () => {
  const random = seededRandom(7);
  const seed = pack([encodeTensor(randomTensor(random, "float32")), encodeTensor(randomTensor(random, "int64"))]);
  let refused = 0;
  for (let i = 0; i < 3000; i++) {
    const body = seed.slice();
    const flips = 1 + Math.floor(random() * 4);
    for (let f = 0; f < flips; f++) body[Math.floor(random() * body.length)] = Math.floor(random() * 256);
    const cut = random() < 0.3 ? body.subarray(0, Math.floor(random() * body.length)) : body;
    try {
      decodeTensors(unpack(cut));
    } catch (error) {
      assert.ok(error instanceof WireFormatError, `${error?.name}: ${error?.message}`);
      refused += 1;
    }
  }
  assert.ok(refused > 1000, `only ${refused} of 3000 mutations were refused`);
});

test("random bytes fail only with WireFormatError", () => {
  const random = seededRandom(11);
  for (let i = 0; i < 2000; i++) {
    const body = Uint8Array.from({ length: Math.floor(random() * 64) }, () => Math.floor(random() * 256));
    try {
      decodeTensors(unpack(body));
    } catch (error) {
      assert.ok(error instanceof WireFormatError, `${error?.name}: ${error?.message}`);
    }
  }
});
