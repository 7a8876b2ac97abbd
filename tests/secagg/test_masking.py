"""The arithmetic of secure aggregation: masks cancel exactly, modulo 2**32."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.secagg import (
    FixedPoint,
    SecaggError,
    TrustAnchor,
    encode_fixed,
    expand_mask,
    key_message,
    mask_update,
    open_seed,
    seal_seed,
    seed_context,
)
from server.aggregation import AggregationConfig, FedBuffAggregator, MaskedConfig
from server.secagg.config import SecureAggregation
from server.secagg.service import sum_masks
from server.secagg.store import Item
from server.storage import snapshots

SIZE = 37


def _raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 12),
    weights=st.lists(st.integers(1, 64 * 64), min_size=12, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_unmasked_sum_is_exactly_the_sum_of_the_encoded_updates(
    k: int, weights: list[int], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    fp = FixedPoint(clip_norm=1.0, max_weight=64 * 64, max_updates=12)
    encoded = [encode_fixed([rng.normal(0, 0.3, SIZE)], fp) for _ in range(k)]
    seeds = [os.urandom(32) for _ in range(k)]
    masked = [e + expand_mask(s, SIZE) for e, s in zip(encoded, seeds, strict=True)]
    ws = weights[:k]

    total = np.zeros(SIZE, np.uint32)
    for m, w in zip(masked, ws, strict=True):
        total += m * np.uint32(w)
    mask_sum = sum_masks(
        [Item(f"u{i}", w) for i, w in enumerate(ws)],
        {f"u{i}": s for i, s in enumerate(seeds)},
        SIZE,
    )
    unmasked = (total - mask_sum).view(np.int32).astype(np.int64)

    exact = sum(e.view(np.int32).astype(np.int64) * w for e, w in zip(encoded, ws, strict=True))
    assert np.array_equal(unmasked, exact)  # integer equality: no wrap, nothing lost


@settings(max_examples=25, deadline=None)
@given(
    staleness=st.lists(st.integers(0, 5), min_size=6, max_size=6),
    counts=st.lists(st.integers(64, 200), min_size=6, max_size=6),
)
def test_a_masked_aggregator_steps_like_a_plain_one_up_to_the_fixed_point(
    staleness: list[int], counts: list[int]
) -> None:
    config = AggregationConfig.from_dict(
        {
            "aggregation_goal": 6,
            "clip_norm": 1.0,
            "example_weighting": {"kind": "linear", "cap": 100},
        }
    )
    secure = SecureAggregation(threshold=2)
    masked_cfg = secure.masked(config)
    fp = secure.fixed_point(config)
    rng = np.random.default_rng(1)
    params = [np.zeros(SIZE, np.float32)]
    plain = FedBuffAggregator(params, config, version=5)
    masked = FedBuffAggregator(params, config, version=5, masked=masked_cfg)
    seeds = {}
    for i, (s, n) in enumerate(zip(staleness, counts, strict=True)):
        delta = rng.normal(0, 0.05, SIZE).astype(np.float32)
        plain.fold(f"u{i}", [delta], n, 5 - s)
        seed = os.urandom(32)
        seeds[f"u{i}"] = seed
        masked.fold(f"u{i}", [encode_fixed([delta], fp) + expand_mask(seed, SIZE)], n, 5 - s)
    (release,) = masked.pending_releases
    step = masked.complete_release(
        sum_masks(
            [Item(u, w) for u, w in zip(release.ids, release.weights, strict=True)], seeds, SIZE
        )
    )

    assert step.version == plain.version == 6
    # example weights are quantized in 64 steps up to the cap (here >= 64 examples: within
    # 1/128 of a weight), staleness weights in 64 steps; values rounded to the scale
    np.testing.assert_allclose(masked.params[0], plain.params[0], rtol=0.02, atol=0.05)
    assert isinstance(masked_cfg, MaskedConfig)


def test_a_sealed_seed_opens_only_for_its_own_update_and_key() -> None:
    service = X25519PrivateKey.generate()
    seed = os.urandom(32)
    context = seed_context("t", "s1", "s1")
    sealed = seal_seed(_raw(service), seed, context)

    assert open_seed(service, sealed, context) == seed
    with pytest.raises(SecaggError):
        open_seed(service, sealed, seed_context("t", "s2", "s2"))  # another session
    with pytest.raises(SecaggError):
        open_seed(X25519PrivateKey.generate(), sealed, context)  # another key
    tampered = type(sealed)(sealed.ephemeral_key, sealed.nonce, bytes(48))
    with pytest.raises(SecaggError):
        open_seed(service, tampered, context)


def test_a_device_encrypts_only_to_a_key_it_trusts() -> None:
    genuine = _raw(X25519PrivateKey.generate())
    forged = _raw(X25519PrivateKey.generate())
    operator = Ed25519PrivateKey.generate()
    operator_pub = operator.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = operator.sign(key_message(genuine))

    TrustAnchor(mask_key=genuine).verify(genuine, None)
    TrustAnchor(operator_key=operator_pub).verify(genuine, signature)
    with pytest.raises(SecaggError):
        TrustAnchor(mask_key=genuine).verify(forged, None)
    with pytest.raises(SecaggError):
        TrustAnchor(operator_key=operator_pub).verify(forged, signature)
    with pytest.raises(SecaggError):
        TrustAnchor().verify(genuine, signature)


def test_masking_clips_to_the_bound_and_never_sends_the_encoded_delta() -> None:
    fp = FixedPoint(clip_norm=1.0, max_weight=64, max_updates=20)
    big = [np.full(SIZE, 10.0, np.float32)]
    encoded = encode_fixed(big, fp)
    masked, sealed = mask_update(big, fp, _raw(X25519PrivateKey.generate()), b"ctx")

    norm = np.linalg.norm(encoded.view(np.int32) / fp.scale)
    assert norm == pytest.approx(1.0, rel=1e-4)
    assert not np.array_equal(masked, encoded)
    assert len(sealed.ciphertext) == 48


def _secure_aggregator(threshold: int, goal: int = 3) -> FedBuffAggregator:
    config = AggregationConfig.from_dict({"aggregation_goal": goal, "clip_norm": 1.0})
    masked = SecureAggregation(threshold=threshold).masked(config)
    return FedBuffAggregator([np.zeros(SIZE, np.float32)], config, version=0, masked=masked)


def _masked(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**32, SIZE, dtype=np.uint32)


def test_a_buffer_waits_for_updates_from_enough_distinct_devices() -> None:
    agg = _secure_aggregator(threshold=3)
    for i, device in enumerate(["a", "a", "b"]):  # three updates, two devices
        agg.fold(f"u{i}", [_masked(i)], 10, 0, source=device)
    assert not agg.pending_releases  # the mask service would refuse it: not sealed
    restored = FedBuffAggregator.from_state(snapshots.load(snapshots.dump(agg.state())))
    for target in (agg, restored):
        target.fold("u3", [_masked(3)], 10, 0, source="c")
        (release,) = target.pending_releases
        assert release.ids == ("u0", "u1", "u2", "u3")


def test_a_buffer_of_one_device_is_sealed_at_the_fixed_point_limit() -> None:
    agg = _secure_aggregator(threshold=2, goal=2)  # the scale allows 2 * K = 4 updates
    for i in range(3):
        agg.fold(f"u{i}", [_masked(i)], 10, 0, source="a")
    assert not agg.pending_releases
    agg.fold("u3", [_masked(3)], 10, 0, source="a")
    (release,) = agg.pending_releases  # sealed rather than wrap; the service refuses it
    assert len(release.ids) == 4
