"""Upload ingest: asyncfl's real upload endpoint against a bare aiohttp handler.

    python load_tests/bench_ingest.py [--json] [--seconds 8] [--connections 64]

For each payload size, in one run, on this machine, with the same load generator
(``upgen``, :file:`upgen.c` compiled with the machine's C compiler; else wrk when
installed; else the built-in aiohttp client), the same bytes (a distinct session token
in each body, on both sides) and the same number of connections:

(a) ``bare``: :mod:`load_tests.bare_server`, whose handler reads the body with
    ``request.read()`` and ``np.add``s it into an accumulator;
(b) ``logic``: :mod:`load_tests.logic_server`, the server's own upload use case
    (:class:`server.ingest.upload.Ingest`: parse, token, single-use claim, checks, the
    fold, the version cut every K, the group cut, the acknowledgement, the metrics)
    with durability left out: no database transaction, no blob or checkpoint write.
    ``logic_ratio`` prices the FL logic alone;
(c) ``asyncfl``: ``POST /v1/tasks/{task}/updates`` on an embedded ``asyncfl serve``
    with its whole path: the same use case, and before each acknowledgement the group
    commit that contains it (the versions stepped, with their ledger rows, in one
    database transaction; one checkpoint of the buffer, fsynced per ``--log-fsync``,
    default ``always`` like the server), every ``--group-ms`` (the server's
    ``ASYNCFL_GROUP_COMMIT_MS``). ``cpu_vs_logic`` is its server CPU per upload over the
    logic side's.

Then, with nothing else running, the disk alone: the same bytes appended as records
for ``--seconds`` with the same fsync policy (``disk_rps``): what a design that writes
every body before acknowledging it could reach at most (the previous upload path
did; ``--audit-log`` turns that write back on, as an option of the server).

The sides alternate ``--rounds`` times (bare, logic, asyncfl, bare, logic, ...) and
each side's best round counts, so a noisy neighbour on a shared machine hurts all alike.

Every timed upload carries its own session, issued by check-ins before timing starts
(sessions are single-use; a replay would be acknowledged without work). The task has a
concurrency of 10M, a one-hour session deadline and no staleness limit (sessions issued
before a round are for one version while versions advance during it); the server has a
per-device rate limit high enough for the generator to act as a few devices at high
rate. After each round the log says how many acknowledged updates were not yet in a
committed version and how long the server took to catch up (the commit lag under
load); before each round the server drains (every update folded, no version pending);
after the last, its count of accepted updates is checked against the 2xx answers.

Output: one JSON line per size, the 4 MB one first and the 400 KB one LAST::

    {"payload_bytes": ..., "bare_rps": ..., "asyncfl_rps": ..., "ratio": ...,
     "asyncfl_p99_ms": ..., "bare_p99_ms": ..., "logic_rps": ..., "logic_ratio": ...,
     "disk_rps": ..., "disk_ratio": ..., "connections": ..., ...}

with the server CPU per request of each side (``*_cpu_us_per_req``). With
``--secure-aggregation`` (the default) the same server then times masked uploads against
plain ones sent by the same aiohttp client, one pre-built body per session
(:mod:`load_tests.secagg_side`): ``secagg_rps``, ``plain_bodies_rps``,
``secagg_vs_plain`` and ``secagg_ratio`` (against the bare handler).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repo root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from load_tests import loadgen, secagg_side
from load_tests.bundle import linear_bundle, num_params
from load_tests.target import AdminApi, enroll_many, issue_sessions, log, start_server
from server.coordination.locallog import INTERVAL_FSYNC_S
from server.coordination.tokens import SessionClaims, TokenSigner

TASK = "bench"
PLACEHOLDER_TOKENS = 50_000  # the bare side cycles through them
LOGIC_TOKEN_FACTOR = 3
PAYLOADS = {"4m": "linear_1m", "400k": "linear_100k", "40k": "linear_10k"}
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="asyncfl upload ingest vs bare aiohttp")
    parser.add_argument("--json", action="store_true", help="print only the JSON lines")
    parser.add_argument(
        "--sizes", default="4m,400k", help="comma list of 4m, 400k, 40k (printed in order)"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before")
    parser.add_argument("--rounds", type=int, default=2, help="bare/asyncfl alternations")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--load-generator", choices=("auto", "native", "wrk", "aiohttp"), default="auto"
    )
    parser.add_argument("--log-fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument(
        "--aggregation-goal", type=int, default=100, help="the task's K (a version per K updates)"
    )
    parser.add_argument("--group-ms", type=float, default=5.0, help="the group commit interval")
    parser.add_argument(
        "--audit-log", action="store_true", help="the server also writes every body (audit)"
    )
    parser.add_argument(
        "--session-factor",
        type=float,
        default=1.5,
        help="sessions issued per round = factor x best bare rps x (warmup + seconds)",
    )
    parser.add_argument(
        "--secure-aggregation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time masked uploads against plain ones, same client (load_tests/secagg_side)",
    )
    parser.add_argument(
        "--secagg-bodies",
        type=int,
        default=0,
        help="bodies built per secure-side round (0: 500 per timed second, at most 4000 and 1 GB; "
        "a round that sends them all ends early, its rate still counts)",
    )
    parser.add_argument("--data-dir", type=Path, help="where the temporary dirs go")
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in args.sizes if s not in PAYLOADS]
    if unknown or not args.sizes:
        parser.error(f"sizes must be among {sorted(PAYLOADS)}")
    if args.load_generator == "auto":
        if loadgen.native_binary() is not None:
            args.load_generator = "native"
        else:
            args.load_generator = "wrk" if loadgen.wrk_available() else "aiohttp"
    return args


# -- one side of the comparison ----------------------------------------------------------
class Side:
    """Runs the load generator against one URL with a supply of session tokens and
    notes the CPU time the server under test spent on each run."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.runs = 0
        self.cpu_s = 0.0

    def run(
        self, url: str, head: bytes, tokens: list[str], seconds: float, pid: int, cycle: bool
    ) -> loadgen.LoadResult:
        cpu = cpu_seconds(pid)
        try:
            return self._run(url, head, tokens, seconds, cycle)
        finally:
            self.cpu_s = cpu_seconds(pid) - cpu

    def _run(
        self, url: str, head: bytes, tokens: list[str], seconds: float, cycle: bool
    ) -> loadgen.LoadResult:
        self.runs += 1
        if self.args.load_generator == "aiohttp":
            return asyncio.run(
                loadgen.run_aiohttp(
                    url,
                    head,
                    tokens,
                    connections=self.args.connections,
                    seconds=seconds,
                    cycle=cycle,
                )
            )
        head_file = self.work / f"head.{self.runs}.bin"
        tokens_file = self.work / f"tokens.{self.runs}.txt"
        head_file.write_bytes(head)
        tokens_file.write_text("\n".join(tokens) + "\n")
        try:
            if self.args.load_generator == "native":
                return loadgen.run_native(
                    url,
                    head_file,
                    tokens_file,
                    connections=self.args.connections,
                    seconds=seconds,
                    cycle=cycle,
                )
            return loadgen.run_wrk(
                url,
                head_file,
                tokens_file,
                connections=self.args.connections,
                seconds=seconds,
                threads=self.args.threads,
                cycle=cycle,
            )
        finally:
            head_file.unlink(missing_ok=True)
            tokens_file.unlink(missing_ok=True)

    def warm_and_time(
        self, url: str, head: bytes, tokens: list[str], pid: int, *, cycle: bool = False
    ) -> tuple[loadgen.LoadResult, float, int]:
        """Warm up, then time. Returns the timed result, the server CPU seconds it took
        and how many 2xx answers both runs got. ``cycle`` reuses the tokens (the bare
        baseline ignores them)."""
        args = self.args
        share = args.warmup / (args.warmup + args.seconds)
        split = int(len(tokens) * share) if args.warmup > 0 and len(tokens) > 1 else 0
        used = 0
        if args.warmup > 0:
            warm = self.run(url, head, tokens[:split] or tokens, args.warmup, pid, cycle)
            _check(warm, "warm-up")
            used = warm.requests
        timed = self.run(url, head, tokens[split:], args.seconds, pid, cycle)
        _check(timed, "timed run")
        return timed, self.cpu_s, used + timed.requests


def _settle(admin: AdminApi) -> str:
    """How far folding and committing lag behind the acknowledged uploads when the load
    stops, and how long the server takes to catch up."""
    started = time.perf_counter()
    status = asyncio.run(admin.status(TASK))
    behind = status["updates_accepted"] - status["updates_applied"]
    asyncio.run(admin.quiescent(TASK))
    return (
        f"{behind} acknowledged updates not yet in a committed version; "
        f"caught up in {time.perf_counter() - started:.1f} s"
    )


def mint_sessions(secret: str, count: int) -> list[str]:
    """Session tokens for the logic server, signed as asyncfl signs them, one each."""
    signer, now = TokenSigner(secret), time.time()
    return [
        signer.session_token(
            SessionClaims(uuid.uuid4().hex, TASK, uuid.uuid4().hex, 0, now, now + 3600)
        )
        for _ in range(count)
    ]


def placeholder_tokens(length: int, count: int = PLACEHOLDER_TOKENS) -> list[str]:
    """Distinct tokens of a real token's length for the bare baseline, which ignores
    them: its bodies differ from request to request exactly as asyncfl's do (one body
    reused would flatter the baseline: wrk then rebuilds no new string per request)."""
    return [f"{i:0{length}d}" for i in range(count)]


def _check(result: loadgen.LoadResult, what: str) -> None:
    if result.socket_errors:
        raise RuntimeError(f"{what}: {result.socket_errors} socket errors")
    if result.non_2xx:
        raise RuntimeError(
            f"{what}: {result.non_2xx} non-2xx answers (sessions used up? raise "
            "--session-factor): the run is invalid"
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads included."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# -- the bare baseline and the FL logic alone --------------------------------------------
class ChildServer:
    """:mod:`load_tests.bare_server` or :mod:`load_tests.logic_server` in a child
    process, stopped by its PID."""

    def __init__(self, work: Path, module: str, *extra: str) -> None:
        self.module = module
        self.extra = extra
        self.port_file = work / f"{module}.port"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def __enter__(self) -> ChildServer:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                f"load_tests.{self.module}",
                "--port-file",
                str(self.port_file),
                *self.extra,
            ],
            env=env,
        )
        deadline = time.monotonic() + 30
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"{self.module} did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}/ingest"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- one payload size --------------------------------------------------------------------
def bench_size(args: argparse.Namespace, size: str, root: Path) -> dict[str, Any]:
    """Alternate bare, logic and asyncfl ``--rounds`` times; each side's best round counts."""
    model = PAYLOADS[size]
    work = root / size
    work.mkdir(parents=True, exist_ok=True)
    parts = linear_bundle(model)
    env = {
        "ASYNCFL_LOG_FSYNC": args.log_fsync,
        "ASYNCFL_GROUP_COMMIT_MS": str(args.group_ms),
        "ASYNCFL_AUDIT_LOG": "true" if args.audit_log else "false",
        "ASYNCFL_DEVICE_RATE_PER_S": "1e9",
        "ASYNCFL_DEVICE_RATE_BURST": "1000000000",
    }
    server = start_server(work / "server", env)
    bare_runs: list[tuple[loadgen.LoadResult, float]] = []
    logic_runs: list[tuple[loadgen.LoadResult, float]] = []
    fl_runs: list[tuple[loadgen.LoadResult, float]] = []
    secret = secrets.token_hex(16)
    try:
        admin = AdminApi(server.url, server.admin_token)
        config = {
            "concurrency": 10_000_000,
            "session_deadline_s": 3600,
            "eval_every": 0,
            "aggregation": {"aggregation_goal": args.aggregation_goal, "max_staleness": None},
        }
        asyncio.run(admin.create_task(TASK, parts, config))
        devices = asyncio.run(enroll_many(server.url, server.enrollment_key, args.connections))
        probe, version = asyncio.run(issue_sessions(server.url, TASK, devices, 1))[0]
        head = loadgen.update_head(parts.param_shapes, base_version=version)
        payload_bytes = len(loadgen.body(head, probe))
        fake = placeholder_tokens(len(probe))
        logic_head = loadgen.update_head(parts.param_shapes, base_version=0)
        side = Side(args, work)
        url = f"{server.url}/v1/tasks/{TASK}/updates"
        sent_ok = 1  # the probe session is never uploaded; counted as slack below
        log(f"[{size}] {payload_bytes} B bodies, {args.connections} connections")
        logic_args = (
            *("--secret", secret, "--model", model),
            *("--goal", str(args.aggregation_goal), "--group-ms", str(args.group_ms)),
        )
        with (
            ChildServer(work, "bare_server") as bare,
            ChildServer(work, "logic_server", *logic_args) as logic,
        ):
            for i in range(args.rounds):
                result, cpu_s, _ = side.warm_and_time(bare.url, head, fake, bare.pid, cycle=True)
                bare_runs.append((result, cpu_s))
                log(f"[{size}] round {i + 1} bare:    {_describe(result, cpu_s)}")

                best = max(r.rps for r, _ in bare_runs)
                needed = math.ceil(args.session_factor * best * (args.warmup + args.seconds))
                needed += 4 * args.connections
                # the logic side reads bodies with a copy fewer than the bare one and
                # can outrun it: give it tokens to spare
                minted = mint_sessions(secret, LOGIC_TOKEN_FACTOR * needed)
                result, cpu_s, _ = side.warm_and_time(logic.url, logic_head, minted, logic.pid)
                logic_runs.append((result, cpu_s))
                log(f"[{size}] round {i + 1} logic:   {_describe(result, cpu_s)}")

                asyncio.run(admin.quiescent(TASK))
                started = time.perf_counter()
                issued = asyncio.run(issue_sessions(server.url, TASK, devices, needed))
                versions = {v for _, v in issued}
                if len(versions) != 1:
                    raise RuntimeError(f"sessions span versions {sorted(versions)}")
                log(
                    f"[{size}] issued {len(issued)} sessions for version {min(versions)} "
                    f"in {time.perf_counter() - started:.1f} s (untimed)"
                )
                head = loadgen.update_head(parts.param_shapes, base_version=min(versions))
                tokens = [s for s, _ in issued]
                result, cpu_s, ok = side.warm_and_time(url, head, tokens, server.pid)
                sent_ok += ok
                fl_runs.append((result, cpu_s))
                log(f"[{size}] round {i + 1} asyncfl: {_describe(result, cpu_s)}")
                log(f"[{size}]   then {_settle(admin)}")
        _verify(admin, sent_ok - 1, 2 * args.connections * 2 * args.rounds)
        secure: dict[str, Any] = {}
        if args.secure_aggregation:
            log(f"[{size}] secure aggregation: masked bodies against plain ones, aiohttp client")
            figures = asyncio.run(
                secagg_side.measure(
                    server.url,
                    admin,
                    parts,
                    devices,
                    goal=args.aggregation_goal,
                    connections=args.connections,
                    seconds=args.seconds,
                    rounds=args.rounds,
                    per_round=args.secagg_bodies or _secagg_bodies(args.seconds, payload_bytes),
                )
            )
            secure = figures.fields()
            secure["secagg_ratio"] = (
                round(figures.secure.rps / max(r.rps for r, _ in bare_runs), 3)
                if bare_runs
                else 0.0
            )
    finally:
        server.stop()
    bare_best, bare_cpu = max(bare_runs, key=lambda run: run[0].rps)
    logic_best, logic_cpu = max(logic_runs, key=lambda run: run[0].rps)
    fl_best, fl_cpu = max(fl_runs, key=lambda run: run[0].rps)
    disk_rps = disk_ceiling(
        work / "disk-probe.bin", payload_bytes, args.seconds, args.log_fsync, args.connections
    )
    log(f"[{size}] disk alone: {disk_rps:7.0f} records/s ({args.log_fsync} fsync)")
    return {
        "payload_bytes": payload_bytes,
        "bare_rps": round(bare_best.rps, 1),
        "asyncfl_rps": round(fl_best.rps, 1),
        "ratio": round(fl_best.rps / bare_best.rps, 3) if bare_best.rps else 0.0,
        "asyncfl_p99_ms": round(fl_best.p99_ms, 2),
        "bare_p99_ms": round(bare_best.p99_ms, 2),
        "bare_cpu_us_per_req": _per_request_us(bare_best, bare_cpu),
        "asyncfl_cpu_us_per_req": _per_request_us(fl_best, fl_cpu),
        "logic_rps": round(logic_best.rps, 1),
        "logic_ratio": round(logic_best.rps / bare_best.rps, 3) if bare_best.rps else 0.0,
        "logic_cpu_us_per_req": _per_request_us(logic_best, logic_cpu),
        "cpu_vs_logic": (
            round(_per_request_us(fl_best, fl_cpu) / _per_request_us(logic_best, logic_cpu), 3)
            if _per_request_us(logic_best, logic_cpu)
            else 0.0
        ),
        "group_commit_ms": args.group_ms,
        "audit_log": args.audit_log,
        "disk_rps": round(disk_rps, 1),
        "disk_ratio": round(disk_rps / bare_best.rps, 3) if bare_best.rps else 0.0,
        "params": num_params(model),
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load_generator": args.load_generator,
        "log_fsync": args.log_fsync,
        "aggregation_goal": args.aggregation_goal,
        **secure,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _secagg_bodies(seconds: float, payload_bytes: int) -> int:
    """Bodies per secure-side round: 500 per timed second, at most 4,000 and ~1 GB."""
    return max(50, min(4000, math.ceil(500 * seconds), 1_000_000_000 // payload_bytes))


def disk_ceiling(path: Path, record_bytes: int, seconds: float, fsync: str, group: int) -> float:
    """Records per second that the disk under the server's data dir takes with nothing
    else running, not even the writeback of the runs before: ``record_bytes`` appended
    at a time for ``seconds``, fdatasync'd per ``group`` records under ``"always"`` (the
    most a group commit of one record per connection batches), as often as the log does
    under ``"interval"``, never under ``"never"``.

    An upload path that makes each body durable before answering gets about this far;
    ``disk_rps / bare_rps`` roughly caps asyncfl's ratio on this machine.
    """
    record = os.urandom(record_bytes)
    os.sync()  # the runs before left gigabytes of dirty pages; their writeback is not ours
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    count, started = 0, time.perf_counter()
    last_sync = started
    try:
        while (now := time.perf_counter()) - started < seconds:
            os.write(fd, record)
            count += 1
            if (fsync == "always" and count % group == 0) or (
                fsync == "interval" and now - last_sync >= INTERVAL_FSYNC_S
            ):
                os.fdatasync(fd)
                last_sync = now
        if fsync != "never":
            os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return count / elapsed


def _per_request_us(result: loadgen.LoadResult, cpu_s: float) -> float:
    return round(cpu_s / result.requests * 1e6, 1) if result.requests else 0.0


def _describe(result: loadgen.LoadResult, cpu_s: float) -> str:
    return (
        f"{result.rps:7.0f} req/s, p50 {result.p50_ms:6.1f} ms, p99 {result.p99_ms:6.1f} ms, "
        f"server CPU {_per_request_us(result, cpu_s):5.0f} us/req"
    )


def _verify(admin: AdminApi, sent_ok: int, slack: int) -> None:
    """Every 2xx was a new, accepted update; requests in flight when a run stopped
    timing (answered, but not counted by the generator) may add up to ``slack``."""
    status = asyncio.run(admin.status(TASK))
    accepted, rejected = status["updates_accepted"], status["updates_rejected"]
    if rejected or not sent_ok <= accepted <= sent_ok + slack:
        raise RuntimeError(
            f"server accepted {accepted} updates, rejected {rejected}; "
            f"the load generator saw {sent_ok} 2xx answers"
        )
    log(f"verified: {accepted} updates accepted (generator saw {sent_ok} 2xx), none rejected")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log(f"load generator: {args.load_generator}; log fsync: {args.log_fsync}")
    root = Path(tempfile.mkdtemp(prefix="afl-bench-", dir=args.data_dir))
    results = []
    try:
        for size in args.sizes:
            results.append(bench_size(args, size, root))
    except BaseException:
        log(f"failed: server data and logs kept in {root}")
        raise
    shutil.rmtree(root, ignore_errors=True)
    if not args.json:
        for r in results:
            print(
                f"{r['payload_bytes']:>9} B  bare {r['bare_rps']:>8.1f}/s  "
                f"asyncfl {r['asyncfl_rps']:>8.1f}/s  ratio {r['ratio']:.3f}  "
                f"asyncfl p99 {r['asyncfl_p99_ms']:.1f} ms"
            )
    for r in results:
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
