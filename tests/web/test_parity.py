"""Parity: the web SDK's Trainer and the Python Trainer, from the same parameters and
batches, end 50 steps within 1e-5 of each other, for every zoo model, on
onnxruntime-node (native) and onnxruntime-web (WASM, one thread; in Node here, in
Chromium in test_browser.py).

WASM and native kernels differ by an ulp. Where a backward picks a gradient's route by a
comparison (a max-pool: the first maximum; ReLU: the sign), a near-tie flips the pick and
the runs drift apart. logreg, mlp and embedding make a few thousand such comparisons a
step; a CNN with max-pools and ReLU ~10^5, enough to meet near-ties within 50 steps, so
the zoo CNN downsamples with strides and uses ELU (see ``server.modeling.zoo.CNN``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client_sdk.bundle import Bundle
from load_tests.web_jobs import max_diff, params_of, parity_error, run_node_job, step_job
from server.modeling.zoo import ZOO
from tests.modeling.support import BundleCache
from tests.web.support import built

STEPS, TOLERANCE = 50, 1e-5


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
    job = step_job(model, folder, steps=STEPS)

    out = await run_node_job(backend, job.job, tmp_path)

    got = params_of(out)
    start = Bundle.load(folder).initial_params
    assert [g.shape for g in got] == [e.shape for e in job.expected]
    assert len(out["losses"]) == STEPS
    diff = parity_error(job, out)
    assert diff <= TOLERANCE, f"{model} on onnxruntime-{backend}: max parameter diff {diff:.3g}"
    assert max_diff(job.expected, start) > 100 * TOLERANCE  # the 50 steps really trained
