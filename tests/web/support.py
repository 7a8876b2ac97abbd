"""Helpers for the web SDK tests: the npm package, the Node device harness, local data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.wire import encode_tensor, pack, unpack
from load_tests.web_jobs import HARNESS, build_web_sdk, node

FEATURES, CLASSES = 64, 10  # the logreg / mlp zoo models (digits: 8x8 images)
# quick retries: the schedule is checked, not the clock
QUICK_RETRY = {"maxAttempts": 30, "baseDelayS": 0.02, "maxDelayS": 0.3, "maxElapsedS": 60}
QUICK = {"retry": QUICK_RETRY, "uploadMarginS": 1.0}


@cache
def built() -> Path:
    """Build the package once per test session (tsc + esbuild, about 3 s)."""
    return build_web_sdk()


def write_data(path: Path, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Path:
    path.write_bytes(
        pack(
            {
                "x": encode_tensor(np.ascontiguousarray(x)),
                "y": encode_tensor(np.ascontiguousarray(y)),
            }
        )
    )
    return path


def local_data(path: Path, n: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n).astype(np.int64)
    return write_data(path, x, y)


@dataclass
class NodeRun:
    """What one harness process printed: events, round results, errors, traffic."""

    lines: list[dict[str, Any]]
    returncode: int
    stderr: str

    @property
    def results(self) -> list[dict[str, Any]]:
        return [line["result"] for line in self.lines if line["type"] == "result"]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == "error"]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [
            line["data"] for line in self.lines if line["type"] == "event" and line["kind"] == kind
        ]

    @property
    def traffic(self) -> dict[str, Any]:
        (line,) = [line for line in self.lines if line["type"] == "traffic"]
        return line


def _config_file(workdir: Path, config: dict[str, Any]) -> Path:
    """A config file of its own: devices started together (threads) never share one (a
    name counted from the folder's files raced, and two devices then ran one's config)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=workdir, prefix="device-", suffix=".json", delete=False
    ) as fh:
        fh.write(json.dumps(config))
    return Path(fh.name)


async def run_device(config: dict[str, Any], workdir: Path, timeout_s: float = 90.0) -> NodeRun:
    """Run the SDK's Client in a Node process (``test/harness/device.mjs``) until it ends."""
    built()
    path = await asyncio.to_thread(_config_file, workdir, config)
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(HARNESS / "device.mjs"),
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    run = NodeRun(lines, proc.returncode or 0, err.decode())
    if not any(line["type"] == "traffic" for line in lines):
        raise AssertionError(f"the harness died (rc {proc.returncode}):\n{run.stderr[-3000:]}")
    return run


def secagg_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run jobs through the web SDK's secagg.ts (``test/harness/secagg.mjs``) in Node."""
    built()
    with tempfile.NamedTemporaryFile(suffix=".msgpack") as fh:
        fh.write(pack(jobs))
        fh.flush()
        proc = subprocess.run(
            [node(), str(HARNESS / "secagg.mjs"), fh.name], capture_output=True, timeout=120
        )
    if proc.returncode != 0:
        raise AssertionError(f"secagg harness failed:\n{proc.stderr.decode()[-3000:]}")
    answers = unpack(proc.stdout)
    assert isinstance(answers, list) and len(answers) == len(jobs)
    return answers
