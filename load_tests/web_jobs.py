"""Train-step jobs for the web SDK: the same start parameters and batches run by the
Python Trainer here and by the web SDK's Trainer in Node or a browser (parity tests and
``load_tests/bench_web.py``).

A job is a msgpack map ``{bundle, params, batches: [{x, y}], lr, repeats}`` (``bundle``:
the bundle folder, for Node); :func:`browser_job` adds ``manifest`` and ``graphs`` so a
page can build the bundle itself. The harness (``client_sdk/web/test/harness/parity.mjs``
for Node, ``client_sdk/web/demo/bench-worker.js`` in a browser) runs one train step per
batch, ``repeats`` times over, and returns the parameters after the first pass, the
losses, every step's milliseconds and every pass's (a browser's ``performance.now()``
is coarsened to 0.1 ms outside cross-origin isolation: time passes, not steps).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.bundle import GRAPH_NAMES, Array, Bundle
from client_sdk.trainer import Trainer
from client_sdk.wire import decode_tensors, encode_tensor, encode_tensors, pack, unpack
from server.modeling.datasets import load_dataset
from server.modeling.zoo import ZOO

WEB = Path(__file__).resolve().parents[1] / "client_sdk" / "web"
HARNESS = WEB / "test" / "harness"


@dataclass
class StepJob:
    job: dict[str, Any]
    expected: list[Array]  # the Python Trainer's parameters after one pass
    python_ms: list[float]  # its step times, every pass
    python_pass_ms: list[float]  # the time of each pass over the batches


def node() -> str:
    path = shutil.which("node")
    if path is None:
        raise RuntimeError("node is not on PATH: the web SDK needs Node >= 20")
    return path


def build_web_sdk() -> Path:
    """tsc + esbuild (about 3 s); needs ``client_sdk/web/node_modules``."""
    if not (WEB / "node_modules" / "onnxruntime-node").is_dir():
        raise RuntimeError("client_sdk/web/node_modules is missing: run `bash .ci/install-browser`")
    subprocess.run([node(), "scripts/build.mjs"], cwd=WEB, check=True, timeout=120)
    return WEB / "dist"


def step_job(
    model: str,
    bundle_dir: Path,
    *,
    steps: int = 50,
    batch: int = 32,
    seed: int = 0,
    repeats: int = 1,
) -> StepJob:
    """``steps`` batches drawn from the model's dataset, trained by the Python Trainer."""
    entry = ZOO[model]
    assert entry.dataset is not None
    x, y, _, _ = load_dataset(entry.dataset)
    rng = np.random.default_rng(seed)
    bundle = Bundle.load(bundle_dir)
    trainer = Trainer(bundle)
    picks = (rng.choice(len(x), batch, replace=False) for _ in range(steps))
    batches = [(x[i], y[i]) for i in picks]
    expected: list[Array] = []
    python_ms, python_pass_ms = [], []
    for repeat in range(repeats):
        params, state = list(bundle.initial_params), trainer.initial_state()
        pass_started = time.perf_counter()
        for xb, yb in batches:
            started = time.perf_counter()
            params, state, _ = trainer.train_step(params, state, xb, yb, entry.lr)
            python_ms.append((time.perf_counter() - started) * 1000)
        python_pass_ms.append((time.perf_counter() - pass_started) * 1000)
        if repeat == 0:
            expected = params
    job = {
        "bundle": str(bundle_dir),
        "params": encode_tensors(bundle.initial_params),
        "batches": [{"x": encode_tensor(xb), "y": encode_tensor(yb)} for xb, yb in batches],
        "lr": entry.lr,
        "repeats": repeats,
    }
    return StepJob(job, expected, python_ms, python_pass_ms)


def browser_job(job: dict[str, Any]) -> bytes:
    """The job with the bundle's bytes in it, for ``/demo/bench.html``."""
    folder = Path(job["bundle"])
    bundle = Bundle.load(folder)
    graphs = {name: bundle.graph(name) for name in GRAPH_NAMES}
    return pack({**job, "manifest": (folder / "manifest.json").read_bytes(), "graphs": graphs})


async def run_node_job(backend: str, job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run ``job`` on onnxruntime-``backend`` (``node`` or ``web``) in a Node process."""
    job_path, out_path = workdir / f"job-{backend}.msgpack", workdir / f"out-{backend}.msgpack"
    await asyncio.to_thread(job_path.write_bytes, pack(job))
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(HARNESS / "parity.mjs"),
        backend,
        str(job_path),
        str(out_path),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"parity.mjs {backend} failed:\n{err.decode()[-3000:]}")
    out: dict[str, Any] = unpack(await asyncio.to_thread(out_path.read_bytes))
    return out


def max_diff(got: list[Array], expected: list[Array]) -> float:
    return max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected, strict=True))


def params_of(out: dict[str, Any]) -> list[Array]:
    return decode_tensors(out["params"])


def parity_error(job: StepJob, out: dict[str, Any]) -> float:
    """The largest parameter difference to the Python Trainer after the run."""
    return max_diff(params_of(out), job.expected)
