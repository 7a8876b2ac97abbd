// Parsing what the server says: check-in answers, error documents, Retry-After; the
// retry schedule (full jitter, never sooner than Retry-After).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DEFAULT_RETRY,
  Retrier,
  ServerError,
  TransportError,
  WireFormatError,
  backoff,
  isRetryable,
  pack,
  parseCheckin,
  parseRetryAfter,
  raiseForError,
  seededRandom,
} from "../../dist/esm/index.js";

const ADMITTED = {
  admitted: true,
  session: "tok",
  session_id: "sid",
  version: 3,
  deadline: 1e9,
  deadline_s: 240,
  plan: { lr: 0.1, batch_size: 16, epochs: 1, max_steps: null, time_budget_s: null },
  artifacts: { manifest: "a", train_step: "b", eval_step: "c", infer: "d" },
  params: { version: 3, url: "/v1/tasks/t/versions/3/params" },
  evaluate: false,
  train: true,
};

test("an admitted check-in is parsed field by field", () => {
  const c = parseCheckin(ADMITTED);
  assert.equal(c.admitted, true);
  assert.deepEqual([c.session, c.sessionId, c.version, c.deadlineS, c.paramsUrl, c.train], ["tok", "sid", 3, 240, "/v1/tasks/t/versions/3/params", true]);
});

test("a turned-away check-in keeps the server's retry_after and reason", () => {
  assert.deepEqual(parseCheckin({ admitted: false, reason: "task_paused", retry_after: 17.5 }), { admitted: false, retryAfter: 17.5, reason: "task_paused" });
  assert.deepEqual(parseCheckin({ admitted: false }), { admitted: false, retryAfter: 1, reason: "no_slot" });
});

test("check-in answers with a missing or mistyped field fail with WireFormatError only", () => {
  const random = seededRandom(3);
  const junk = [null, 0, "x", [], {}, { a: 1 }, -1, 1e308, true];
  for (let i = 0; i < 2000; i++) {
    const answer = { ...ADMITTED, params: { ...ADMITTED.params }, plan: { ...ADMITTED.plan } };
    const keys = Object.keys(answer);
    const key = keys[Math.floor(random() * keys.length)];
    const pick = structuredClone(junk[Math.floor(random() * junk.length)]);
    if (random() < 0.3) answer.plan.lr = pick; // before the map itself may go
    if (random() < 0.5) answer[key] = pick;
    else delete answer[key];
    try {
      const parsed = parseCheckin(answer);
      assert.ok(typeof parsed.admitted === "boolean");
    } catch (error) {
      assert.ok(error instanceof WireFormatError, `${error?.name}: ${error?.message}`);
    }
  }
});

test("error answers become ServerError with the server's code and Retry-After", () => {
  const body = pack({ error: { code: "too_stale", message: "staleness 9" } });
  const resp = { status: 409, headers: new Map([["content-type", "application/msgpack"], ["retry-after", "3"]]), body };
  assert.throws(() => raiseForError(resp), (e) => e instanceof ServerError && e.code === "too_stale" && e.status === 409 && e.retryAfter === 3);
  const json = { status: 401, headers: new Map([["content-type", "application/json"]]), body: new TextEncoder().encode('{"error":{"code":"invalid_device_token","message":"no"}}') };
  assert.throws(() => raiseForError(json), (e) => e.code === "invalid_device_token" && e.retryAfter === null);
  const html = { status: 502, headers: new Map(), body: new TextEncoder().encode("<html>bad gateway</html>") };
  assert.throws(() => raiseForError(html), (e) => e.code === "http_error" && e.serverMessage.includes("bad gateway"));
  raiseForError({ status: 204, headers: new Map(), body: new Uint8Array() });
});

test("Retry-After is delta-seconds or an HTTP date", () => {
  assert.equal(parseRetryAfter("7"), 7);
  assert.equal(parseRetryAfter(" 2.5 "), 2.5);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter("soon"), null);
  assert.equal(parseRetryAfter("-3"), null);
  const now = Date.parse("Wed, 21 Oct 2026 07:28:00 GMT") / 1000;
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:28:30 GMT", now), 30);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:27:00 GMT", now), 0);
});

test("backoff is full jitter under an exponential ceiling and honours Retry-After", () => {
  const random = seededRandom(5);
  for (let failures = 1; failures < 12; failures++) {
    const ceiling = Math.min(DEFAULT_RETRY.maxDelayS, DEFAULT_RETRY.baseDelayS * 2 ** (failures - 1));
    for (let i = 0; i < 50; i++) {
      const wait = backoff(DEFAULT_RETRY, failures, random);
      assert.ok(wait >= 0 && wait <= ceiling);
      assert.ok(backoff(DEFAULT_RETRY, failures, random, 42) >= 42);
    }
  }
});

test("the retrier retries transport failures, 5xx, 429 and upload_in_progress, nothing else", async () => {
  assert.ok(isRetryable(new TransportError("reset")));
  for (const status of [429, 500, 502, 503, 504]) assert.ok(isRetryable(new ServerError(status, "x", "")));
  assert.ok(isRetryable(new ServerError(409, "upload_in_progress", "")));
  for (const code of ["session_used", "too_stale"]) assert.ok(!isRetryable(new ServerError(409, code, "")));
  const slept = [];
  const retrier = new Retrier({ maxAttempts: 4, baseDelayS: 0.1, maxDelayS: 1, maxElapsedS: 100 }, async (s) => void slept.push(s), seededRandom(1));
  let calls = 0;
  const answer = await retrier.call("x", async () => {
    calls += 1;
    if (calls < 3) throw new ServerError(503, "unavailable", "", 2);
    return "ok";
  });
  assert.equal(answer, "ok");
  assert.equal(calls, 3);
  assert.ok(slept.length === 2 && slept.every((s) => s >= 2));
  await assert.rejects(
    retrier.call("y", async () => {
      throw new ServerError(409, "session_used", "");
    }),
    (e) => e.code === "session_used",
  );
});
