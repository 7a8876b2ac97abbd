"""Closed-loop upload load: ``upgen`` (native), wrk, or a built-in aiohttp client.

All send the same bytes: an update map whose last entry is ``session``, so each
request differs from the previous one only by its session token. ``N`` connections each
keep one request in flight for the duration; the result is throughput and latency.

``upgen`` (:file:`upgen.c`, compiled on first use with the machine's C compiler) sends
each body with one ``writev`` of the request head, the shared update bytes and the
token's few bytes. wrk's Lua builds a new body string per request; with a distinct
token in each, LuaJIT maps and unmaps every 400 KB body, and wrk, not the server,
sets the pace (:mod:`load_tests.compare_generators` measures it: the bare handler took
1,806 req/s from wrk with one body reused, 1,075 with distinct ones; 1,661 and 1,589
from upgen).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgpack
import numpy as np

from client_sdk.wire import CONTENT_TYPE, encode_tensor

LUA_SCRIPT = Path(__file__).with_name("upload.lua")
UPGEN_SOURCE = Path(__file__).with_name("upgen.c")
EXHAUSTED_PATH = "/__sessions_exhausted__"


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.non_2xx == 0 and self.socket_errors == 0


def update_head(
    shapes: Sequence[tuple[int, ...]], *, base_version: int = 0, seed: int = 0
) -> bytes:
    """The msgpack update map minus its final ``session`` entry (see :func:`body`)."""
    rng = np.random.default_rng(seed)
    tensors = [
        encode_tensor((rng.standard_normal(shape) * 1e-3).astype(np.float32)) for shape in shapes
    ]
    fields: list[tuple[str, Any]] = [
        ("base_version", base_version),
        ("num_examples", 32),
        ("encoding", "float32"),
        ("metrics", {"loss": 0.5}),
        ("tensors", tensors),
    ]
    packer = msgpack.Packer(use_bin_type=True)
    out = bytearray(packer.pack_map_header(len(fields) + 1))
    for key, value in fields:
        out += packer.pack(key) + packer.pack(value)
    return bytes(out)


def body(head: bytes, session: str) -> bytes:
    """A whole update body: ``head`` plus the ``session`` entry (what upload.lua builds)."""
    return head + msgpack.packb("session") + msgpack.packb(session)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def native_binary() -> Path | None:
    """``upgen``, compiled once per source version into the temp dir; None without a C
    compiler (or if it fails: its error is raised, a broken source is a bug)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = UPGEN_SOURCE.read_bytes()
    binary = (
        Path(tempfile.gettempdir()) / f"asyncfl-upgen-{hashlib.sha256(source).hexdigest()[:16]}"
    )
    if not binary.exists():
        tmp = binary.with_suffix(f".{time.monotonic_ns()}.tmp")
        cmd = [compiler, "-O2", "-pthread", "-o", str(tmp), str(UPGEN_SOURCE)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiling {UPGEN_SOURCE.name} failed: {done.stderr}")
        tmp.replace(binary)
    return binary


def run_native(
    url: str,
    head_file: Path,
    tokens_file: Path,
    *,
    connections: int,
    seconds: float,
    cycle: bool = False,
) -> LoadResult:
    """Run ``upgen``; ``cycle`` reuses the tokens (for a server ignoring them)."""
    binary = native_binary()
    if binary is None:
        raise RuntimeError("no C compiler for the native load generator")
    target = urlsplit(url)
    cmd = [
        str(binary),
        target.hostname or "127.0.0.1",
        str(target.port or 80),
        target.path,
        str(head_file),
        str(tokens_file),
        str(connections),
        str(seconds),
        *(["cycle"] if cycle else []),
    ]
    return _parse_summary(cmd, seconds)


def run_wrk(
    url: str,
    head_file: Path,
    tokens_file: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    cycle: bool = False,
) -> LoadResult:
    """Run wrk with upload.lua; ``cycle`` reuses the tokens (for a server ignoring them)."""
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        str(head_file),
        str(tokens_file),
        str(threads),
        *(["cycle"] if cycle else []),
    ]
    return _parse_summary(cmd, seconds)


def _parse_summary(cmd: list[str], seconds: float) -> LoadResult:
    """Run a generator that prints upload.lua's JSON summary line last."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        name = Path(cmd[0]).name
        raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr or done.stdout}")
    doc = json.loads(lines[-1])
    return LoadResult(
        requests=doc["requests"],
        seconds=doc["duration_us"] / 1e6,
        non_2xx=doc["non_2xx"],
        socket_errors=doc["socket_errors"],
        p50_ms=doc["p50_us"] / 1e3,
        p99_ms=doc["p99_us"] / 1e3,
    )


async def run_aiohttp(
    url: str,
    head: bytes,
    tokens: Sequence[str],
    *,
    connections: int,
    seconds: float,
    cycle: bool = False,
) -> LoadResult:
    """The built-in fallback: ``connections`` keep-alive workers, one request in flight each;
    ``cycle`` reuses the tokens (for a server that ignores them)."""
    next_token = itertools.cycle(tokens) if cycle else iter(tokens)
    exhausted = url.split("/v1/")[0] + EXHAUSTED_PATH

    def requests() -> Iterator[tuple[str, bytes]]:
        for token in next_token:
            yield url, body(head, token)
        while True:
            yield exhausted, b""

    return await closed_loop(requests(), connections=connections, seconds=seconds)


async def closed_loop(
    requests: Iterator[tuple[str, bytes]],
    *,
    connections: int,
    seconds: float,
    timeout_s: float = 30.0,
) -> LoadResult:
    """POST ``(url, body)`` pairs from ``requests`` with ``connections`` keep-alive
    workers, one request in flight each, for ``seconds`` or until the pairs run out."""
    headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
    latencies: list[float] = []
    non_2xx = socket_errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal non_2xx, socket_errors
        for target, payload in requests:
            if time.perf_counter() >= stop_at:
                return
            started = time.perf_counter()
            try:
                async with http.post(target, data=payload, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                socket_errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if not 200 <= status < 300:
                non_2xx += 1

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
    )
