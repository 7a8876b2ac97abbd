"""Parity: the web SDK's Trainer and the Python Trainer, from the same parameters and
batches, end 50 steps within 1e-5 of each other, for every zoo model, on
onnxruntime-node (native) and onnxruntime-web (WASM, one thread).

The CNN's batches get a jitter of 1e-3 (invisible in an image in [0, 1]): the upsampled
digits have constant regions, so the max-pool backward meets exact ties, and which tied
element counts as "first" follows one-ulp differences between the WASM and native conv
kernels. Without the jitter the WASM run drifts to ~3e-2 in 50 steps (both are valid
subgradients; see the README's web SDK section and load_tests/bench_web.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from client_sdk.bundle import Bundle
from client_sdk.trainer import Trainer
from client_sdk.wire import decode_tensors, encode_tensor, encode_tensors, pack, unpack
from server.modeling.datasets import load_dataset
from server.modeling.zoo import ZOO
from tests.modeling.support import BundleCache
from tests.web.support import HARNESS, built, node

STEPS, BATCH, TOLERANCE = 50, 32, 1e-5
TIE_JITTER = {"cnn": 1e-3}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    return BundleCache(tmp_path_factory.getbasetemp() / "modeling-bundles")


def parity_job(model: str, bundle_dir: Path, seed: int = 0) -> tuple[dict[str, Any], list[Any]]:
    """The batches and start parameters, and the Python Trainer's parameters after them."""
    entry = ZOO[model]
    assert entry.dataset is not None
    x, y, _, _ = load_dataset(entry.dataset)
    rng = np.random.default_rng(seed)
    if model in TIE_JITTER:
        x = (x + rng.normal(0, TIE_JITTER[model], x.shape)).astype(x.dtype)
    bundle = Bundle.load(bundle_dir)
    trainer = Trainer(bundle)
    batches = [
        (x[i], y[i]) for i in (rng.choice(len(x), BATCH, replace=False) for _ in range(STEPS))
    ]
    params, state = list(bundle.initial_params), trainer.initial_state()
    for xb, yb in batches:
        params, state, _ = trainer.train_step(params, state, xb, yb, entry.lr)
    job = {
        "bundle": str(bundle_dir),
        "params": encode_tensors(bundle.initial_params),
        "batches": [{"x": encode_tensor(xb), "y": encode_tensor(yb)} for xb, yb in batches],
        "lr": entry.lr,
    }
    return job, params


async def run_parity(backend: str, job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    built()
    job_path, out_path = workdir / f"job-{backend}.msgpack", workdir / f"out-{backend}.msgpack"
    job_path.write_bytes(pack(job))
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(HARNESS / "parity.mjs"),
        backend,
        str(job_path),
        str(out_path),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    out: dict[str, Any] = unpack(out_path.read_bytes())
    return out


@pytest.mark.parametrize("backend", ["node", "web"])
@pytest.mark.parametrize("model", sorted(ZOO))
async def test_web_sdk_training_matches_the_python_trainer(
    model: str, backend: str, bundles: BundleCache, tmp_path: Path
) -> None:
    job, expected = parity_job(model, await asyncio.to_thread(bundles, model))

    out = await run_parity(backend, job, tmp_path)

    got = decode_tensors(out["params"])
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert len(out["losses"]) == STEPS
    diff = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected, strict=True))
    assert diff <= TOLERANCE, f"{model} on onnxruntime-{backend}: max parameter diff {diff:.3g}"
    moved = max(
        float(np.max(np.abs(e - p)))
        for e, p in zip(expected, Bundle.load(job["bundle"]).initial_params, strict=True)
    )
    assert moved > 100 * TOLERANCE  # the 50 steps really trained
