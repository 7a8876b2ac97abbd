"""The web SDK's secure aggregation (``client_sdk/web/src/secagg.ts``, run in Node) against
the Python side: the same masks, the same fixed-point words, seeds sealed in one language
opened in the other, trust anchors signed in Python verified in TypeScript, and the real
mask service (``asyncfl secagg serve``, a child process) opening seeds the web SDK sealed
and releasing sums of masks that cancel the web SDK's masks exactly."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from client_sdk.secagg import (
    FixedPoint,
    SealedSeed,
    encode_fixed,
    expand_mask,
    key_message,
    open_seed,
    seal_seed,
    seed_context,
)
from client_sdk.wire import encode_tensors
from server.aggregation import Release
from server.errors import UpdateRejected
from server.secagg.client import MaskClient
from server.secagg.provider import MaskServiceProvider
from tests.web.support import secagg_jobs

FP = FixedPoint(clip_norm=5.0, max_weight=64 * 64, max_updates=6)


def _raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _words(answer: dict[str, Any], name: str) -> np.ndarray[Any, Any]:
    assert "error" not in answer, answer
    return np.frombuffer(answer[name], "<u4")


def _as_int(words: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return words.astype(np.uint32).view(np.int32).astype(np.int64)


def _norm(delta: list[np.ndarray[Any, Any]]) -> float:
    return float(np.linalg.norm(np.concatenate([t.ravel() for t in delta]).astype(np.float64)))


def _deltas(rng: np.random.Generator, count: int) -> list[list[np.ndarray[Any, Any]]]:
    """Deltas of two tensors (a logreg's shapes), well inside and well outside the clip."""
    out = []
    for i in range(count):
        spread = [0.01, 0.05, 0.5, 3.0][i % 4]  # norms ~0.25 .. ~75 against a clip of 5
        out.append(
            [
                rng.normal(0, spread, (10, 64)).astype(np.float32),
                rng.normal(0, spread, 10).astype(np.float32),
            ]
        )
    return out


def test_masks_are_the_same_chacha20_words_in_both_languages() -> None:
    rng = np.random.default_rng(1)
    # sizes across ChaCha20's 16-word blocks, and a 1M-word mask
    sizes = [0, 1, 15, 16, 17, 31, 32, 33, 650, 9_610, 100_003, 1_000_000]
    seeds = [rng.bytes(32) for _ in sizes] + [bytes(32), b"\xff" * 32]
    sizes += [64, 64]

    answers = secagg_jobs(
        [{"op": "expand", "seed": s, "size": n} for s, n in zip(seeds, sizes, strict=True)]
    )

    for seed, size, answer in zip(seeds, sizes, answers, strict=True):
        assert np.array_equal(_words(answer, "mask"), expand_mask(seed, size)), size


def test_the_fixed_point_scale_is_the_same_for_every_term() -> None:
    terms = [
        FixedPoint(5.0, 4096, 6),
        FixedPoint(1.0, 1, 1),
        FixedPoint(0.1, 64, 200),
        FixedPoint(3.7, 4096, 20_000),
        FixedPoint(1e-6, 1, 1),
    ]

    answers = secagg_jobs([{"op": "scale", "fixed_point": fp.to_dict()} for fp in terms])

    assert [a["scale"] for a in answers] == [fp.scale for fp in terms]


def test_fixed_point_words_match_and_clipped_ones_within_one_step() -> None:
    rng = np.random.default_rng(2)
    deltas = _deltas(rng, 24)

    answers = secagg_jobs(
        [
            {"op": "encode", "tensors": encode_tensors(d), "fixed_point": FP.to_dict()}
            for d in deltas
        ]
    )

    for delta, answer in zip(deltas, answers, strict=True):
        ts, py = _as_int(_words(answer, "encoded")), _as_int(encode_fixed(delta, FP))
        if _norm(delta) <= FP.clip_norm:
            assert np.array_equal(ts, py)  # no clip: the words are defined exactly
        else:
            # clipped: the norm is summed in another order (numpy's BLAS dot vs a loop),
            # so the clip factor can differ in its last bit, and a word by one step
            assert int(np.max(np.abs(ts - py))) <= 1
            assert float(np.mean(ts == py)) > 0.99


def test_ties_round_half_to_even_as_numpy_rint() -> None:
    # scale 1024 exactly: (2k+1)/2048 times the scale is k + 1/2, a tie to round
    fp = FixedPoint(clip_norm=1.0, max_weight=1, max_updates=2_096_000)
    assert fp.scale == 1024
    ties = (np.arange(-40, 40, dtype=np.float32) * 2 + 1) / 2048
    delta = [ties.astype(np.float32)]

    (answer,) = secagg_jobs(
        [{"op": "encode", "tensors": encode_tensors(delta), "fixed_point": fp.to_dict()}]
    )

    assert np.array_equal(_as_int(_words(answer, "encoded")), _as_int(encode_fixed(delta, fp)))


def test_seeds_sealed_in_typescript_open_in_python_and_the_other_way() -> None:
    service = X25519PrivateKey.generate()
    public = _raw_public(service)
    seeds = [os.urandom(32) for _ in range(6)]
    contexts = [seed_context("task-é", f"s{i}", f"s{i}") for i in range(6)]
    by_python = [seal_seed(public, s, c) for s, c in zip(seeds, contexts, strict=True)]
    private = service.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    sealed_ts = secagg_jobs(
        [
            {"op": "seal", "mask_key": public, "seed": s, "context": c}
            for s, c in zip(seeds, contexts, strict=True)
        ]
    )
    opened_ts = secagg_jobs(
        [
            {"op": "open", "private_key": private, "sealed": p.to_wire(), "context": c}
            for p, c in zip(by_python, contexts, strict=True)
        ]
    )

    for seed, context, answer in zip(seeds, contexts, sealed_ts, strict=True):
        sealed = SealedSeed.from_wire(answer["sealed"])
        assert open_seed(service, sealed, context) == seed
    assert [a["seed"] for a in opened_ts] == seeds


def test_a_seed_sealed_for_one_update_opens_for_no_other_in_either_language() -> None:
    service = X25519PrivateKey.generate()
    public = _raw_public(service)
    private = service.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    context = seed_context("t", "s1", "s1")
    (answer,) = secagg_jobs(
        [{"op": "seal", "mask_key": public, "seed": os.urandom(32), "context": context}]
    )
    sealed = answer["sealed"]
    flipped = bytearray(sealed["ciphertext"])
    flipped[3] ^= 1
    others = [
        (sealed, seed_context("t", "s2", "s2")),  # another session
        (sealed, seed_context("u", "s1", "s1")),  # another task
        ({**sealed, "ciphertext": bytes(flipped)}, context),  # tampered
        ({**sealed, "nonce": os.urandom(12)}, context),
    ]

    refused_ts = secagg_jobs(
        [{"op": "open", "private_key": private, "sealed": s, "context": c} for s, c in others]
    )

    assert [a.get("error") for a in refused_ts] == ["SecaggError"] * len(others)
    for s, c in others:
        with pytest.raises(Exception, match="does not open"):
            open_seed(service, SealedSeed.from_wire(s), c)


def test_trust_anchors_signed_in_python_verify_in_typescript() -> None:
    operator, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    key, other = _raw_public(X25519PrivateKey.generate()), _raw_public(X25519PrivateKey.generate())
    signature = operator.sign(key_message(key))
    vouched = {"operator_key": _raw_public(operator)}
    cases = [
        ({"mask_key": key}, key, None, None),  # pinned
        ({"mask_key": key}, other, None, "not the pinned one"),
        (vouched, key, signature, None),
        (vouched, other, signature, "not signed by the operator"),  # signature of another key
        (vouched, key, stranger.sign(key_message(key)), "not signed by the operator"),
        (vouched, key, operator.sign(key), "not signed by the operator"),  # no context prefix
        (vouched, key, None, "without an operator signature"),
        ({}, key, signature, "no trust anchor"),
    ]

    answers = secagg_jobs(
        [{"op": "verify", "anchor": a, "mask_key": k, "signature": s} for a, k, s, _ in cases]
    )

    for (_, _, _, refusal), answer in zip(cases, answers, strict=True):
        if refusal is None:
            assert answer == {}
        else:
            assert answer["error"] == "SecaggError" and refusal in answer["message"], answer


@pytest.fixture
async def mask_service(tmp_path: Path) -> AsyncIterator[MaskClient]:
    """The real mask service, as ``asyncfl serve`` runs it: a child process, own key."""
    provider = MaskServiceProvider(url="", token="", child_dir=tmp_path / "secagg")
    try:
        yield await provider.client()
    finally:
        await provider.close()


async def test_the_mask_service_opens_web_seeds_and_its_release_unmasks_web_updates(
    mask_service: MaskClient,
) -> None:
    key = (await mask_service.key()).public_key
    rng = np.random.default_rng(3)
    # inside the clip (norms ~0.3 .. 1.3), so every word is defined exactly
    deltas = [d for d in _deltas(rng, 8) if _norm(d) <= FP.clip_norm][:4]
    ids = [f"w{i}" for i in range(len(deltas))]
    weights = [7, 4096, 1, 300]
    answers = secagg_jobs(
        [
            {
                "op": "mask",
                "tensors": encode_tensors(d),
                "fixed_point": FP.to_dict(),
                "mask_key": key,
                "context": seed_context("web", uid, uid),
            }
            for d, uid in zip(deltas, ids, strict=True)
        ]
    )
    for uid, answer in zip(ids, answers, strict=True):
        await mask_service.register(
            "web",
            update_id=uid,
            session_id=uid,
            device_id=f"d-{uid}",
            threshold=3,
            sealed=SealedSeed.from_wire(answer["sealed"]),
        )
    size = 650
    release = Release(1, tuple(ids), tuple(weights), np.zeros(size, np.uint32), 0.0, "r1")

    mask_sum = await mask_service.release("web", release, size)

    total = np.zeros(size, np.uint32)
    for answer, w in zip(answers, weights, strict=True):
        total += _words(answer, "masked") * np.uint32(w)
    unmasked = _as_int(total - mask_sum)
    expected = sum(_as_int(encode_fixed(d, FP)) * w for d, w in zip(deltas, weights, strict=True))
    assert len(deltas) == 4
    assert np.array_equal(unmasked, expected)  # the masks cancel exactly: integer equality
    masked = _as_int(_words(answers[0], "masked"))
    assert float(np.mean(np.abs(masked) < 2**30)) < 0.6  # what left the device: uniform


async def test_the_mask_service_refuses_a_web_seed_sent_for_another_update(
    mask_service: MaskClient,
) -> None:
    key = (await mask_service.key()).public_key
    (answer,) = secagg_jobs(
        [
            {
                "op": "mask",
                "tensors": encode_tensors([np.ones(4, np.float32)]),
                "fixed_point": FP.to_dict(),
                "mask_key": key,
                "context": seed_context("web", "a", "a"),
            }
        ]
    )

    with pytest.raises(UpdateRejected) as refused:
        await mask_service.register(
            "web",
            update_id="b",
            session_id="b",
            device_id="d",
            threshold=3,
            sealed=SealedSeed.from_wire(answer["sealed"]),
        )
    assert refused.value.code == "seed_refused"
