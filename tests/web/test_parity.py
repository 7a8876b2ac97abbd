"""Parity: the web SDK's Trainer and the Python Trainer, from the same parameters and
batches, end 50 steps within 1e-5 of each other, for every zoo model, on
onnxruntime-node (native) and onnxruntime-web (WASM, one thread; in Node here, in
Chromium in test_browser.py).

The CNN's images get a jitter of 1e-3 (invisible in pixels in [0, 1]). The upsampled
digits have constant regions, so the max-pool backward meets exact ties, and which
tied element is "first" follows one-ulp differences between the WASM and the native
conv kernels: without the jitter the WASM run drifts to ~3e-2 in 50 steps (each run is
a valid subgradient path; ``load_tests/bench_web.py`` reports both figures).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client_sdk.bundle import Bundle
from load_tests.web_jobs import max_diff, params_of, run_node_job, step_job
from server.modeling.zoo import ZOO
from tests.modeling.support import BundleCache
from tests.web.support import built

STEPS, TOLERANCE = 50, 1e-5
TIE_JITTER = {"cnn": 1e-3}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    return BundleCache(tmp_path_factory.getbasetemp() / "modeling-bundles")


@pytest.mark.parametrize("backend", ["node", "web"])
@pytest.mark.parametrize("model", sorted(ZOO))
async def test_web_sdk_training_matches_the_python_trainer(
    model: str, backend: str, bundles: BundleCache, tmp_path: Path
) -> None:
    built()
    folder = await asyncio.to_thread(bundles, model)
    job = step_job(model, folder, steps=STEPS, jitter=TIE_JITTER.get(model, 0.0))

    out = await run_node_job(backend, job.job, tmp_path)

    got = params_of(out)
    start = Bundle.load(folder).initial_params
    assert [g.shape for g in got] == [e.shape for e in job.expected]
    assert len(out["losses"]) == STEPS
    diff = max_diff(got, job.expected)
    assert diff <= TOLERANCE, f"{model} on onnxruntime-{backend}: max parameter diff {diff:.3g}"
    assert max_diff(job.expected, start) > 100 * TOLERANCE  # the 50 steps really trained
