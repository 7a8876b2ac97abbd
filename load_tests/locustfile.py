"""A fleet of asyncfl devices for Locust: FastHttpUser + gevent, mostly asleep "training".

    locust -f load_tests/locustfile.py --headless --host http://127.0.0.1:8080 \\
        --asyncfl-task load --asyncfl-users 1000 --asyncfl-ramp-s 30 --asyncfl-steady-s 60
    (the enrollment key comes from LOCUST_ASYNCFL_ENROLLMENT_KEY)

Each user is one device, doing what the SDK's device loop does:

1. enroll once (``POST /v1/devices/enroll``) for a device token, or take the next token
   of ``--asyncfl-device-tokens`` (devices enrolled before the run: ``run.py`` does
   that, so the ramp-up measures devices arriving, not a bulk enrollment);
2. check in; when turned away, sleep the server's ``retry_after`` and check in again;
3. fetch the task's artifacts once (content-addressed: a device keeps them) and the
   parameters of each new version (``If-None-Match`` with the ETag it holds);
4. "train" for a time drawn from a heavy-tailed distribution (``--asyncfl-train-time``,
   default ``lognormal:30:1``: median 30 s, mean ~50 s, 2% past four minutes); a device
   whose training would overrun the session deadline gives up at the deadline minus a
   margin and does not upload, like a device hitting its training timeout;
5. upload a delta of the task's real shapes (from the manifest), in msgpack, and go to 2.
   A 429/503 answer is retried after ``Retry-After`` while the session is still valid.

Locust statistics are named after the calls (``enroll``, ``checkin``, ``artifact``,
``params``, ``upload``); an HTTP error or a transport error is a failure. What devices
experienced beyond HTTP (turned away, abandoned sessions, refused uploads by reason) is
counted per process and reported to the master, then written with the steady-state
figures to ``--asyncfl-summary`` (JSON) for ``run.py``.

:class:`FleetShape` is the load shape: a linear ramp to ``--asyncfl-users`` over
``--asyncfl-ramp-s``, then ``--asyncfl-steady-s`` at that count, then stop. The steady
state starts once every user is spawned; the shape snapshots the statistics then, so the
summary has whole-run and steady-state figures (the HTML report and CSVs cover the whole
run).
"""

from __future__ import annotations

import gc
import json
import os
import random
import select
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
import gevent.monkey
import msgpack
import numpy as np
from geventhttpclient.connectionpool import ConnectionPool
from locust import FastHttpUser, LoadTestShape, events, runners, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry, calculate_response_time_percentile

if __package__ in (None, ""):  # ``locust -f load_tests/locustfile.py``: import the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from load_tests.training import SPECS, TrainTime

MSGPACK = "application/msgpack"
HEADERS = {"Content-Type": MSGPACK, "Accept": MSGPACK}
ARTIFACTS = ("manifest", "train_step", "eval_step", "infer")
MAX_BACKOFF_S = 30.0

# The master declares a worker missing after this many heartbeat intervals (1 s) without
# one, and stops the whole run when the last goes missing. Locust's 3 is too short on a
# 2-core machine with 10,000 users and the server on the same cores: a worker's gevent loop
# can go 3-5 s without a turn (seen: "The last worker went missing, stopping test" 70 s
# into the ramp, at load average 5). A worker that really died is seen after 30 s instead.
runners.HEARTBEAT_LIVENESS = 30


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--asyncfl-task", default="load", help="task id the devices train")
    parser.add_argument(
        "--asyncfl-enrollment-key",
        default="",
        env_var="LOCUST_ASYNCFL_ENROLLMENT_KEY",
        is_secret=True,
        help="the server's enrollment key (prefer the environment variable)",
    )
    parser.add_argument(
        "--asyncfl-train-time",
        default="lognormal:30:1",
        help=f"training time: {SPECS}",
    )
    parser.add_argument(
        "--asyncfl-deadline-margin-s",
        type=float,
        default=10.0,
        help="a device gives up training this long before its session deadline",
    )
    parser.add_argument("--asyncfl-users", type=int, default=100, help="fleet size (shape)")
    parser.add_argument("--asyncfl-ramp-s", type=float, default=30.0, help="ramp-up seconds")
    parser.add_argument("--asyncfl-steady-s", type=float, default=60.0, help="steady seconds")
    parser.add_argument("--asyncfl-summary", default="", help="write the summary JSON here")
    parser.add_argument(
        "--asyncfl-device-tokens",
        default="",
        include_in_web_ui=False,
        help="file of enrolled device tokens, one a line (else each user enrolls)",
    )
    parser.add_argument(
        "--asyncfl-workers",
        type=int,
        default=1,
        include_in_web_ui=False,
        help="worker processes sharing the token file (each takes every n-th token)",
    )


# -- connection reuse past fd 1023 ------------------------------------------------------------
_POLL = gevent.monkey.get_original("select", "poll")
_POLL_GONE = select.POLLIN | select.POLLERR | select.POLLHUP


def _is_socket_alive(self: ConnectionPool, sock: Any) -> bool:
    """An idle keep-alive socket is alive unless readable (EOF) or in error.

    geventhttpclient 2.6's check uses ``select.select``, which refuses descriptors past
    FD_SETSIZE (1024): with thousands of users every pooled socket then looks dead, and
    each request opens a new connection (a getaddrinfo in gevent's thread pool and a TCP
    handshake). ``poll`` has no such limit.
    """
    if sock is None:
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        poller = _POLL()
        poller.register(fd, _POLL_GONE)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


_create_socket = ConnectionPool._create_socket


def _counted_create_socket(self: ConnectionPool) -> Any:
    COUNTERS["connections_opened"] += 1
    return _create_socket(self)


ConnectionPool._is_socket_alive = _is_socket_alive  # type: ignore[method-assign]
ConnectionPool._create_socket = _counted_create_socket  # type: ignore[method-assign]


# -- per-process state -----------------------------------------------------------------------
COUNTERS: Counter[str] = Counter()  # device outcomes, sent to the master with each report
_DELTAS: dict[str, list[dict[str, Any]]] = {}  # manifest digest -> wire tensors, shared
ALL_STATUSES = frozenset(range(100, 600))
_TOKENS: list[str] | None = None  # this process' share of the enrolled devices, unused
_RETURNED: list[str] = []  # tokens of stopped users (Locust rebalancing workers), reused first


def _pooled_token(env: Environment) -> str | None:
    """The next free pre-enrolled device token of this process, or None (enroll instead).

    A user Locust stops (when it rebalances users between workers) gives its token back,
    so a worker that briefly runs more than its share does not enroll thousands of new
    devices at once (on a starved machine 5,000 did, in the ramp-up)."""
    global _TOKENS
    opts: Any = env.parsed_options
    if not opts.asyncfl_device_tokens:
        return None
    if _TOKENS is None:
        with open(opts.asyncfl_device_tokens) as fh:
            tokens = fh.read().split()
        worker = isinstance(env.runner, WorkerRunner)
        share = max(1, opts.asyncfl_workers) if worker else 1
        index = int(getattr(env.runner, "worker_index", 0)) if worker else 0
        _TOKENS = tokens[index % share :: share][::-1]  # popped from the end: file order
    if _RETURNED:
        return _RETURNED.pop()
    return _TOKENS.pop() if _TOKENS else None


def _delta_tensors(manifest: bytes, digest: str) -> list[dict[str, Any]]:
    """A small random delta of the manifest's parameter shapes, built once per process."""
    cached = _DELTAS.get(digest)
    if cached is None:
        rng = np.random.default_rng(len(_DELTAS))
        specs = json.loads(manifest)["params"]
        cached = []
        for spec in specs:
            arr = (rng.standard_normal(spec["shape"]) * 1e-3).astype(spec["dtype"])
            cached.append({"dtype": spec["dtype"], "shape": spec["shape"], "data": arr.tobytes()})
        _DELTAS[digest] = cached
    return cached


class Device(FastHttpUser):
    """One device: enroll, then check in / fetch / train / upload until stopped."""

    network_timeout = 60.0
    connection_timeout = 60.0
    pooled_token: str | None = None  # a pre-enrolled device's, given back on stop

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.task_id: str = opts.asyncfl_task
        self.train_time = TrainTime.parse(opts.asyncfl_train_time)
        self.margin_s: float = opts.asyncfl_deadline_margin_s
        self.rng = random.Random(os.getpid() * 1_000_003 + id(self))
        self.etags: dict[str, str] = {}  # artifact digest / params URL -> ETag held
        self.manifest: bytes | None = None
        self.manifest_digest = ""
        self.params_version = -1
        self.backoff_s = 1.0
        self.headers = dict(HEADERS)
        # Every status reaches the code below, which decides what is a failure. Left to
        # its default, geventhttpclient raises on a 4xx/5xx and, logging the exchange,
        # decodes the msgpack answer as UTF-8: the UnicodeDecodeError killed the user
        # uncounted (1,477 enrollments answered 5xx were in no failure figure).
        self.client.client.valid_response_codes = ALL_STATUSES
        self.pooled_token = _pooled_token(self.environment)
        if self.pooled_token is not None:
            self.headers["Authorization"] = f"Bearer {self.pooled_token}"
            return
        while not self._enroll(opts.asyncfl_enrollment_key):
            self._sleep(self._next_backoff())

    def on_stop(self) -> None:
        if self.pooled_token is not None:
            _RETURNED.append(self.pooled_token)
            self.pooled_token = None

    # -- protocol steps ------------------------------------------------------------------
    def _enroll(self, key: str) -> bool:
        body = msgpack.packb({"enrollment_key": key, "device_info": {"kind": "locust"}})
        with self.client.post(
            "/v1/devices/enroll", data=body, headers=HEADERS, name="enroll", catch_response=True
        ) as resp:
            if _backpressure(resp, "enroll"):
                return False
            if resp.status_code != 201:
                resp.failure(f"enroll: HTTP {resp.status_code}")
                return False
            token = msgpack.unpackb(resp.content)["device_token"]
        self.headers["Authorization"] = f"Bearer {token}"
        return True

    @task
    def session(self) -> None:
        answer = self._checkin()
        if answer is None:
            self._sleep(self._next_backoff())
            return
        self.backoff_s = 1.0
        if not answer.get("admitted"):
            COUNTERS["turned_away"] += 1
            self._sleep(float(answer.get("retry_after", 1.0)))
            return
        COUNTERS["admitted"] += 1
        started = time.monotonic()
        if not self._fetch_artifacts(answer["artifacts"]) or not self._fetch_params(answer):
            self._sleep(self._next_backoff())
            return
        budget = float(answer["deadline_s"]) - self.margin_s - (time.monotonic() - started)
        train_s = self.train_time.sample(self.rng)
        if train_s > budget:
            self._sleep(max(0.0, budget))
            COUNTERS["abandoned_at_deadline"] += 1
            return
        self._sleep(train_s)
        self._upload(answer, started + float(answer["deadline_s"]) - self.margin_s / 2, train_s)

    def _checkin(self) -> dict[str, Any] | None:
        path = f"/v1/tasks/{self.task_id}/checkin"
        body = msgpack.packb({"sdk_version": "locust", "eligible": True})
        with self.client.post(
            path, data=body, headers=self.headers, name="checkin", catch_response=True
        ) as resp:
            if _backpressure(resp, "checkin"):
                return None
            if resp.status_code != 200:
                resp.failure(f"checkin: HTTP {resp.status_code}")
                return None
            answer: dict[str, Any] = msgpack.unpackb(resp.content)
            return answer

    def _fetch_artifacts(self, artifacts: dict[str, str]) -> bool:
        """Fetch each content-addressed artifact once; later sessions reuse it."""
        for name in ARTIFACTS:
            digest = artifacts[name]
            if digest in self.etags:
                continue
            body = self._get(f"/v1/artifacts/{digest}", "artifact", digest)
            if body is None:
                return False
            if name == "manifest":
                self.manifest, self.manifest_digest = body, digest
        return self.manifest is not None

    def _fetch_params(self, answer: dict[str, Any]) -> bool:
        """The parameters of the session's version, unless this device already holds them."""
        version = int(answer["version"])
        if version == self.params_version:
            COUNTERS["params_cached"] += 1
            return True
        url = str(answer["params"]["url"])
        if self._get(url, "params", url) is None:
            return False
        self.params_version = version
        return True

    def _get(self, path: str, name: str, key: str) -> bytes | None:
        headers = dict(self.headers)
        etag = self.etags.get(key)
        if etag:
            headers["If-None-Match"] = etag
        with self.client.get(path, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code == 304:
                COUNTERS[f"{name}_not_modified"] += 1
                return b""
            if resp.status_code != 200:
                resp.failure(f"{name}: HTTP {resp.status_code}")
                return None
            self.etags[key] = resp.headers.get("ETag", "")
            return bytes(resp.content or b"")

    def _upload(self, answer: dict[str, Any], give_up_at: float, train_s: float) -> None:
        assert self.manifest is not None
        body = msgpack.packb(
            {
                "session": answer["session"],
                "base_version": int(answer["version"]),
                "num_examples": 32,
                "encoding": "float32",
                "tensors": _delta_tensors(self.manifest, self.manifest_digest),
                "metrics": {"loss": 0.5, "train_s": train_s},
            }
        )
        path = f"/v1/tasks/{self.task_id}/updates"
        while True:
            with self.client.post(
                path, data=body, headers=HEADERS, name="upload", catch_response=True
            ) as resp:
                status = resp.status_code
                if status == 200:
                    ack = msgpack.unpackb(resp.content)
                    COUNTERS["upload_duplicate" if ack.get("duplicate") else "uploaded"] += 1
                    return
                if status in (429, 503):  # backpressure: honour Retry-After
                    resp.success()
                    COUNTERS[f"upload_retry_{status}"] += 1
                    wait = float(resp.headers.get("Retry-After") or 1.0)
                    if time.monotonic() + wait >= give_up_at:
                        COUNTERS["abandoned_at_deadline"] += 1
                        return
                    self._sleep(wait)
                    continue
                if status in (409, 410):  # too stale, expired: the protocol's refusals
                    resp.success()
                    COUNTERS[f"upload_refused_{_error_code(resp.content)}"] += 1
                    return
                resp.failure(f"upload: HTTP {status} {_error_code(resp.content)}")
                return

    # -- helpers --------------------------------------------------------------------------
    def _sleep(self, seconds: float) -> None:
        gevent.sleep(max(0.0, seconds))

    def _next_backoff(self) -> float:
        wait = self.backoff_s * (0.5 + self.rng.random())
        self.backoff_s = min(MAX_BACKOFF_S, self.backoff_s * 2)
        return wait


def _backpressure(resp: Any, name: str) -> bool:
    """A 429 or 503 (rate limited, database busy, starting): the protocol's "retry
    later", not a failure; the caller backs off."""
    if resp.status_code not in (429, 503):
        return False
    resp.success()
    COUNTERS[f"{name}_retry_{resp.status_code}"] += 1
    return True


def _error_code(content: bytes | None) -> str:
    try:
        doc = msgpack.unpackb(content or b"")
        return str(doc["error"]["code"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        try:
            return str(json.loads(content or b"")["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return "unknown"


# -- the shape and the summary -----------------------------------------------------------------
class FleetShape(LoadTestShape):
    """Linear ramp to the fleet size, then a steady state of fixed length, then stop."""

    steady_from: float | None = None

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts: Any = self.runner.environment.parsed_options
        users, ramp_s = int(opts.asyncfl_users), max(0.001, float(opts.asyncfl_ramp_s))
        rate = max(1.0, users / ramp_s)
        run_time = self.get_run_time()
        if self.steady_from is None:
            spawned = self.runner.user_count >= users
            if spawned or run_time > ramp_s * 2 + 30:  # never wait forever for stragglers
                self.steady_from = run_time
                SUMMARY.steady_started(self.runner.environment, time.time(), spawned)
            return users, rate
        if run_time - self.steady_from < float(opts.asyncfl_steady_s):
            return users, rate
        SUMMARY.steady_ended(self.runner.environment, time.time())
        return None


class Summary:
    """Steady-state snapshots of the master's statistics and the devices' counters."""

    def __init__(self) -> None:
        self.start: dict[str, tuple[int, int, dict[int, int]]] = {}
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.fully_spawned = False
        self.counters: Counter[str] = Counter()

    @staticmethod
    def _snapshot(env: Environment) -> dict[str, tuple[int, int, dict[int, int]]]:
        return {
            name: (e.num_requests, e.num_failures, dict(e.response_times))
            for (name, _method), e in env.stats.entries.items()
        }

    def steady_started(self, env: Environment, now: float, spawned: bool) -> None:
        self.start, self.started_at, self.fully_spawned = self._snapshot(env), now, spawned

    def steady_ended(self, env: Environment, now: float) -> None:
        if self.ended_at is None:
            self.ended_at = now

    def document(self, env: Environment) -> dict[str, Any]:
        end = self._snapshot(env)
        seconds = (self.ended_at or time.time()) - (self.started_at or time.time())
        names: dict[str, Any] = {}
        for name, (requests, failures, times) in end.items():
            r0, f0, t0 = self.start.get(name, (0, 0, {}))
            steady = {k: v - t0.get(k, 0) for k, v in times.items() if v - t0.get(k, 0) > 0}
            n = requests - r0
            names[name] = {
                "requests": requests,
                "failures": failures,
                "steady_requests": n,
                "steady_failures": failures - f0,
                "steady_per_s": n / seconds if seconds > 0 else 0.0,
                "steady_p50_ms": _percentile(steady, n, 0.50),
                "steady_p99_ms": _percentile(steady, n, 0.99),
                "p50_ms": _percentile(times, requests, 0.50),
                "p99_ms": _percentile(times, requests, 0.99),
            }
        total: StatsEntry = env.stats.total
        errors = env.stats.serialize_errors()
        return {
            "steady_started_at": self.started_at,
            "steady_ended_at": self.ended_at,
            "steady_seconds": seconds,
            "fully_spawned": self.fully_spawned,
            "requests": total.num_requests,
            "failures": total.num_failures,
            "errors": {str(e["error"]): e["occurrences"] for e in errors.values()},
            "names": names,
            "devices": dict(self.counters + COUNTERS),
        }


def _percentile(times: dict[int, int], count: int, q: float) -> float:
    return float(calculate_response_time_percentile(times, count, q)) if count > 0 else 0.0


SUMMARY = Summary()


LAG_PROBE_S = 0.05


def _watch_lag() -> None:
    """Count how late this process' gevent loop wakes a sleeper (client-side delay that
    Locust adds to every response time it records)."""
    while True:
        started = time.monotonic()
        gevent.sleep(LAG_PROBE_S)
        late_ms = (time.monotonic() - started - LAG_PROBE_S) * 1e3
        COUNTERS["client_lag_probes"] += 1
        for bound in (50, 100, 250, 1000):
            if late_ms > bound:
                COUNTERS[f"client_lag_over_{bound}ms"] += 1


_gc_started = 0.0


def _time_gc(phase: str, info: dict[str, Any]) -> None:
    """Count this process' long garbage collections (they stall every user in it)."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took_ms = (time.perf_counter() - _gc_started) * 1e3
    if took_ms > 50:
        COUNTERS[f"client_gc_gen{info['generation']}_over_50ms"] += 1


@events.test_start.add_listener
def _start_lag_probe(environment: Environment, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        # Thousands of users are thousands of long-lived objects: collect the young
        # generation less often, and keep what exists at start out of full collections.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        gc.callbacks.append(_time_gc)
        gevent.spawn(_watch_lag)


@events.report_to_master.add_listener
def _send_counters(client_id: str, data: dict[str, Any]) -> None:
    data["asyncfl_devices"] = dict(COUNTERS)
    COUNTERS.clear()


@events.worker_report.add_listener
def _receive_counters(client_id: str, data: dict[str, Any]) -> None:
    SUMMARY.counters.update(data.get("asyncfl_devices", {}))


@events.quitting.add_listener
def _write_summary(environment: Environment, **_kwargs: Any) -> None:
    path = environment.parsed_options.asyncfl_summary if environment.parsed_options else ""
    if not path or isinstance(environment.runner, WorkerRunner):
        return
    document = SUMMARY.document(environment)
    document["distributed"] = isinstance(environment.runner, MasterRunner)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(document, fh, indent=1)
    os.replace(tmp, path)
