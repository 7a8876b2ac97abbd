"""Secure aggregation end to end: SDK clients mask, the embedded server folds masked
updates, its own mask service child releases sums of masks, the model trains; nothing
update-shaped the server persisted is an unmasked update."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from client_sdk.secagg import TrustAnchor
from server.clientfleet import FLEET_OPTIONS
from server.secagg.keys import MaskKeys
from server.tasks.checkpoints import CheckpointLog
from tests.conftest import ServerProcessFactory
from tests.server.fleet import Fleet, create_task, status, wait_for

SECURE = {
    "aggregation": {
        "aggregation_goal": 3,
        "clip_norm": 5.0,
        "optimizer": {"name": "fedavg", "lr": 1.0},
    },
    "secure_aggregation": {"threshold": 3},
}


def _pinned(data_dir: Path) -> TrustAnchor:
    """The mask service's key, known to the app out of band (the server's data dir holds
    its child's key: made here first, as an operator would)."""
    return TrustAnchor(mask_key=MaskKeys.load_or_create(data_dir / "secagg").public)


def _looks_masked(words: np.ndarray) -> float:
    """The share of 32-bit words below 2**30 in magnitude as int32: about 1/2 for a
    masked vector (uniform), 1 for any unmasked sum the fixed-point scale allows."""
    values = np.abs(words.view(np.int32).astype(np.int64))
    return float(np.mean(values < 2**30))


async def test_masked_updates_train_the_model_and_nothing_persisted_is_in_the_clear(
    start_server: ServerProcessFactory,
) -> None:
    server = start_server()
    await create_task(server, **SECURE)
    options = dataclasses.replace(FLEET_OPTIONS, secagg_trust=_pinned(server.data_dir))
    fleet = await Fleet(server, options=options).enroll(7)
    try:
        first = await fleet.run(rounds=1)  # 7 updates: two releases of 3, one left over
        after = await wait_for(server, lambda s: s["updates_applied"] == 6)
        log = CheckpointLog(server.data_dir / "checkpoints" / "t1", "never")
        latest = log.read_latest()
        log.close()
        more = await fleet.run(rounds=1)
    finally:
        await fleet.close()

    assert all(type(r).__name__ == "Trained" for r in first + more)
    assert after["version"] == 2 and after["updates_buffered"] == 1
    assert after["last_eval"] is not None
    # the one buffered update, as the server keeps it durably: masked, not in the clear
    assert latest is not None
    held = np.frombuffer(latest.total, np.uint32)
    assert held.size == 650  # logreg
    assert 0.4 < _looks_masked(held) < 0.6
    final = await wait_for(server, lambda s: s["updates_applied"] >= 12)
    assert final["version"] >= 4


async def test_a_plain_update_to_a_secure_task_is_refused(
    start_server: ServerProcessFactory,
) -> None:
    server = start_server()
    await create_task(server, **SECURE)
    fleet = await Fleet(server).enroll(1)  # no trust anchor: it gives the session back
    try:
        (result,) = await fleet.run(rounds=1)
    finally:
        await fleet.close()
    assert type(result).__name__ == "Rejected"
    assert result.reason == "secagg_untrusted"  # type: ignore[attr-defined]
    assert (await status(server))["updates_accepted"] == 0
