"""The mask service as a real process: what it accepts, what it refuses, what it keeps."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.secagg import SealedSeed, expand_mask, seal_seed, seed_context
from server.aggregation import Release
from server.errors import Conflict, UpdateRejected
from server.secagg.client import MaskClient
from server.secagg.provider import MaskServiceProvider

SIZE = 64
THRESHOLD = 3


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[MaskClient]:
    provider = MaskServiceProvider(url="", token="", child_dir=tmp_path / "secagg")
    try:
        yield await provider.client()
    finally:
        await provider.close()


async def _register(client: MaskClient, n: int, *, devices: int | None = None) -> dict[str, bytes]:
    key = (await client.key()).public_key
    seeds = {}
    for i in range(n):
        uid, seed = f"u{i}", os.urandom(32)
        sealed = seal_seed(key, seed, seed_context("t", uid, uid))
        await client.register(
            "t",
            update_id=uid,
            session_id=uid,
            device_id=f"d{i % (devices or n)}",
            threshold=THRESHOLD,
            sealed=sealed,
        )
        seeds[uid] = seed
    return seeds


def _release(ids: list[str], weights: list[int], version: int = 1) -> Release:
    return Release(
        version, tuple(ids), tuple(weights), np.zeros(SIZE, np.uint32), 0.0, "-".join(ids)
    )


async def test_a_release_is_the_weighted_sum_of_masks_and_repeats_exactly(
    service: MaskClient,
) -> None:
    seeds = await _register(service, 4)
    release = _release(["u0", "u1", "u2"], [3, 1, 7])

    first = await service.release("t", release, SIZE)
    again = await service.release("t", release, SIZE)

    expected = sum(
        (
            expand_mask(seeds[u], SIZE) * np.uint32(w)
            for u, w in zip(release.ids, release.weights, strict=True)
        ),
        np.zeros(SIZE, np.uint32),
    )
    assert np.array_equal(first, expected)
    assert np.array_equal(again, first)  # a crashed aggregator can finish its commit


@pytest.mark.parametrize(
    ("ids", "weights", "code"),
    [
        (["u0", "u1"], [1, 1], "release_below_threshold"),
        (["u0", "u1", "nope"], [1, 1, 1], "release_unknown_update"),
    ],
)
async def test_releases_below_threshold_or_naming_unknown_updates_are_refused(
    service: MaskClient, ids: list[str], weights: list[int], code: str
) -> None:
    await _register(service, 4)

    with pytest.raises(Conflict) as refused:
        await service.release("t", _release(ids, weights), SIZE)

    assert refused.value.code == code
    # nothing was used up: a proper release of the same updates still goes through
    await service.release("t", _release(["u0", "u1", "u2"], [1, 1, 1]), SIZE)


async def test_overlapping_releases_are_refused(service: MaskClient) -> None:
    await _register(service, 5)
    await service.release("t", _release(["u0", "u1", "u2"], [1, 1, 1]), SIZE)

    with pytest.raises(Conflict) as overlap:  # would let the server difference two sums
        await service.release("t", _release(["u2", "u3", "u4"], [1, 1, 1], version=2), SIZE)

    assert overlap.value.code == "release_overlap"


async def test_too_few_distinct_devices_cannot_release(service: MaskClient) -> None:
    await _register(service, 3, devices=1)  # one device, three updates

    with pytest.raises(Conflict) as refused:
        await service.release("t", _release(["u0", "u1", "u2"], [1, 1, 1]), SIZE)

    assert refused.value.code == "release_below_threshold"


async def test_tampered_or_rebound_seeds_are_refused(service: MaskClient) -> None:
    key = (await service.key()).public_key
    good = seal_seed(key, os.urandom(32), seed_context("t", "u0", "u0"))
    tampered = SealedSeed(good.ephemeral_key, good.nonce, bytes(48))
    rebound = seal_seed(key, os.urandom(32), seed_context("t", "other", "other"))

    for sealed, uid in ((tampered, "u0"), (rebound, "u1")):
        with pytest.raises(UpdateRejected) as refused:
            await service.register(
                "t",
                update_id=uid,
                session_id=uid,
                device_id="d",
                threshold=THRESHOLD,
                sealed=sealed,
            )
        assert refused.value.code == "seed_refused"


async def test_committed_releases_forget_their_seeds(service: MaskClient, tmp_path: Path) -> None:
    await _register(service, 3)
    release = _release(["u0", "u1", "u2"], [1, 1, 1])
    await service.release("t", release, SIZE)

    await service.commit("t", [release.release_id])

    with pytest.raises(Conflict) as gone:
        await service.release("t", release, SIZE)
    assert gone.value.code == "release_unknown_update"


async def test_concurrent_registrations_get_their_own_verdicts(service: MaskClient) -> None:
    """Registrations arriving together are written in one group: each still gets its own
    answer (a repeat of the same sealed seed is accepted, another seed for an id is not),
    and every accepted seed is there afterwards (a release of all of them works)."""
    key = (await service.key()).public_key
    seeds = {f"u{i}": os.urandom(32) for i in range(40)}
    sealed = {u: seal_seed(key, s, seed_context("t", u, u)) for u, s in seeds.items()}
    rival = seal_seed(key, os.urandom(32), seed_context("t", "u7", "u7"))

    async def register(uid: str, what: SealedSeed, device: str) -> str:
        try:
            await service.register(
                "t",
                update_id=uid,
                session_id=uid,
                device_id=device,
                threshold=THRESHOLD,
                sealed=what,
            )
        except UpdateRejected as exc:
            return exc.code
        return "accepted"

    calls = [register(u, sealed[u], f"d{u}") for u in seeds]
    calls += [register("u3", sealed["u3"], "du3"), register("u7", rival, "du7")]
    verdicts = await asyncio.gather(*calls)
    assert all(v == "accepted" for i, v in enumerate(verdicts[:40]) if i != 7)
    assert verdicts[40] == "accepted"  # the same seed twice: idempotent
    # exactly one of the two seeds for u7 was kept; the other was refused
    assert sorted([verdicts[7], verdicts[41]]) == ["accepted", "seed_refused"]
    kept = seeds["u7"] if verdicts[7] == "accepted" else None
    ids = sorted(seeds)
    if kept is None:
        ids.remove("u7")
    everything = Release(
        1, tuple(ids), (1,) * len(ids), np.zeros(SIZE, np.uint32), 0.0, "all-of-them"
    )
    mask_sum = await service.release("t", everything, SIZE)
    expected = np.zeros(SIZE, np.uint32)
    for uid in ids:
        expected += expand_mask(seeds[uid], SIZE)
    assert np.array_equal(mask_sum, expected)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=70)
    | st.binary(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_fields = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        [
            "update_id",
            "session_id",
            "device_id",
            "threshold",
            "sealed",
            "release_id",
            "version",
            "size",
            "items",
        ],
        _values,
    ),
)


async def test_arbitrary_bodies_get_a_4xx_in_the_error_shape(service: MaskClient) -> None:
    """Whatever an authenticated caller sends to the mask service's endpoints, the answer
    is a refusal with the error shape (never a 5xx), and nothing is released."""
    cases: list[tuple[object, str]] = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=_fields | _values, path=st.sampled_from(["seeds", "releases"]))
    def collect(body: object, path: str) -> None:  # drawn here, sent on the event loop below
        cases.append((body, path))

    collect()
    for body, path in cases:
        status, answer = await service._call("POST", f"/v1/tasks/t/{path}", body)
        assert 400 <= status < 500, (status, body)
        assert isinstance(answer, dict) and isinstance(answer["error"]["code"], str)
