"""Asynchronous secure aggregation, the device's side (and the protocol both sides share).

A device taking part in a secure-aggregation task never uploads its delta in the clear:

1. it clips the delta to the task's L2 bound ``clip_norm`` (so every coordinate lies in
   ``[-clip_norm, clip_norm]``);
2. encodes it in fixed point, ``q = round(x * scale)`` as integers modulo 2**32, where
   ``scale`` (given by the server, :class:`FixedPoint`) is small enough that a sum of
   ``max_updates`` updates each weighted by at most ``max_weight`` cannot wrap;
3. adds a mask: the ChaCha20 keystream of a fresh random 32-byte seed, read as
   little-endian uint32 words (modulo 2**32);
4. encrypts the seed to the mask service's X25519 public key: an ephemeral X25519 key,
   HKDF-SHA256 of the shared secret, ChaCha20-Poly1305 with the task, session and update
   id as associated data, so the sealed seed is good for this update only.

The mask service (the stand-in for Papaya's TEE) holds the only private key; it
releases the weighted sum of masks for a buffer of at least K updates from distinct
devices, and the server subtracts it from its weighted sum of masked updates. Before
it encrypts to a key, the device checks that the key is the mask service's: pinned in
the app, or signed by an operator key the app ships (:class:`TrustAnchor`).

Every primitive comes from the maintained ``cryptography`` package; nothing here is a
hand-written cipher.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from client_sdk.errors import SdkError

__all__ = [
    "ENCODING",
    "MODULUS",
    "FixedPoint",
    "SealedSeed",
    "SecaggError",
    "TrustAnchor",
    "decode_sum",
    "encode_fixed",
    "expand_mask",
    "key_message",
    "mask_update",
    "open_seed",
    "seal_seed",
    "seed_context",
]

ENCODING = "masked-fixed32"
MODULUS = 1 << 32
SEED_BYTES = 32
HKDF_INFO = b"asyncfl secagg seed v1"
KEY_CONTEXT = b"asyncfl mask service key v1:"
# ChaCha20 as the mask generator: key = the seed, a fixed all-zero 16-byte counter+nonce
# (each seed is fresh and used for exactly one mask, so no (key, nonce) pair repeats).
MASK_NONCE = bytes(16)


class SecaggError(SdkError):
    """The secure-aggregation parameters or a sealed seed are unusable."""


@dataclass(frozen=True)
class FixedPoint:
    """How a task encodes deltas: ``clip_norm``, the largest integer weight and the most
    updates one sum may hold; ``scale`` follows from them so no sum can wrap."""

    clip_norm: float
    max_weight: int
    max_updates: int

    @property
    def scale(self) -> float:
        # |sum| <= max_updates * max_weight * clip_norm * scale must stay below 2**31
        bound = self.max_updates * self.max_weight * self.clip_norm
        return math.floor((2**31 - 1) / bound)

    def check(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise SecaggError("clip_norm must be a positive finite number")
        if self.max_weight < 1 or self.max_updates < 1:
            raise SecaggError("max_weight and max_updates must be >= 1")
        if self.scale < 1:
            raise SecaggError(
                "no fixed-point scale fits: lower max_updates, max_weight or clip_norm"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip_norm": self.clip_norm,
            "max_weight": self.max_weight,
            "max_updates": self.max_updates,
        }

    @classmethod
    def from_dict(cls, data: Any) -> FixedPoint:
        try:
            fp = cls(float(data["clip_norm"]), int(data["max_weight"]), int(data["max_updates"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise SecaggError(f"bad fixed-point parameters: {exc!r}") from exc
        fp.check()
        return fp


def encode_fixed(delta: Sequence[np.ndarray[Any, Any]], fp: FixedPoint) -> np.ndarray[Any, Any]:
    """Clip the delta to ``fp.clip_norm`` (L2) and encode it as one flat uint32 vector."""
    flat = np.concatenate([np.asarray(t, np.float64).ravel() for t in delta])
    if not np.isfinite(flat).all():
        raise SecaggError("the delta holds NaN or Inf")
    norm = float(np.linalg.norm(flat))
    if norm > fp.clip_norm:
        flat *= fp.clip_norm / norm
    q = np.rint(flat * fp.scale).astype(np.int64)
    return (q & 0xFFFFFFFF).astype(np.uint32)


def expand_mask(seed: bytes, size: int) -> np.ndarray[Any, Any]:
    """The mask of ``seed``: ``size`` little-endian uint32 words of its ChaCha20 stream."""
    if len(seed) != SEED_BYTES:
        raise SecaggError(f"a seed is {SEED_BYTES} bytes")
    stream = Cipher(algorithms.ChaCha20(seed, MASK_NONCE), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(4 * size)), dtype="<u4").astype(np.uint32)


def seed_context(task: str, session_id: str, update_id: str) -> bytes:
    """The associated data a sealed seed is bound to."""
    return f"asyncfl/{task}/{session_id}/{update_id}".encode()


@dataclass(frozen=True)
class SealedSeed:
    """A seed encrypted to the mask service: what the upload carries."""

    ephemeral_key: bytes  # raw X25519 public key, 32 bytes
    nonce: bytes  # 12 bytes
    ciphertext: bytes  # seed + Poly1305 tag

    def to_wire(self) -> dict[str, bytes]:
        return {
            "ephemeral_key": self.ephemeral_key,
            "nonce": self.nonce,
            "ciphertext": self.ciphertext,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> SealedSeed:
        if not isinstance(obj, dict) or set(obj) != {"ephemeral_key", "nonce", "ciphertext"}:
            raise SecaggError("a sealed seed is {ephemeral_key, nonce, ciphertext}")
        eph, nonce, ct = obj["ephemeral_key"], obj["nonce"], obj["ciphertext"]
        if not all(isinstance(v, bytes) for v in (eph, nonce, ct)):
            raise SecaggError("a sealed seed's fields are bytes")
        if len(eph) != 32 or len(nonce) != 12 or len(ct) != SEED_BYTES + 16:
            raise SecaggError("a sealed seed has a 32-byte key, a 12-byte nonce, 48 bytes")
        return cls(eph, nonce, ct)


def _aead_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=HKDF_INFO
    ).derive(shared)


def seal_seed(mask_key: bytes, seed: bytes, context: bytes) -> SealedSeed:
    """Encrypt ``seed`` to the mask service's raw X25519 public key ``mask_key``."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(mask_key))
    nonce = os.urandom(12)
    aead = ChaCha20Poly1305(_aead_key(shared, eph_pub, mask_key))
    return SealedSeed(eph_pub, nonce, aead.encrypt(nonce, seed, context))


def open_seed(private_key: X25519PrivateKey, sealed: SealedSeed, context: bytes) -> bytes:
    """The mask service's side: the seed, or SecaggError if it was sealed for anything
    else (another key, another update, tampered bytes)."""
    own = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(sealed.ephemeral_key))
        aead = ChaCha20Poly1305(_aead_key(shared, sealed.ephemeral_key, own))
        seed = aead.decrypt(sealed.nonce, sealed.ciphertext, context)
    except (InvalidTag, ValueError) as exc:
        raise SecaggError("the sealed seed does not open for this update") from exc
    return seed


def mask_update(
    delta: Sequence[np.ndarray[Any, Any]],
    fp: FixedPoint,
    mask_key: bytes,
    context: bytes,
) -> tuple[np.ndarray[Any, Any], SealedSeed]:
    """Clip, encode, mask with a fresh seed and seal the seed: ``(masked, sealed)``."""
    encoded = encode_fixed(delta, fp)
    seed = os.urandom(SEED_BYTES)
    masked = encoded + expand_mask(seed, encoded.size)  # uint32: wraps modulo 2**32
    return masked, seal_seed(mask_key, seed, context)


def decode_sum(unmasked: np.ndarray[Any, Any], fp: FixedPoint) -> np.ndarray[Any, Any]:
    """A sum of encoded updates (uint32, unmasked) back to floats (times the weights)."""
    return unmasked.astype(np.uint32).view(np.int32).astype(np.float64) / fp.scale


def key_message(mask_key: bytes) -> bytes:
    """What an operator signs to vouch for a mask service's public key."""
    return KEY_CONTEXT + mask_key


@dataclass(frozen=True)
class TrustAnchor:
    """How a device knows the key it encrypts to is the mask service's (the stand-in for
    TEE attestation): a pinned key, or an Ed25519 operator key that signed it."""

    mask_key: bytes | None = None
    operator_key: bytes | None = None

    def verify(self, mask_key: bytes, signature: bytes | None) -> None:
        if self.mask_key is None and self.operator_key is None:
            raise SecaggError("no trust anchor: pin the mask service key or an operator key")
        if self.mask_key is not None:
            if mask_key != self.mask_key:
                raise SecaggError("the mask service key is not the pinned one")
            return
        assert self.operator_key is not None
        if signature is None:
            raise SecaggError("the mask service key comes without an operator signature")
        try:
            Ed25519PublicKey.from_public_bytes(self.operator_key).verify(
                signature, key_message(mask_key)
            )
        except (InvalidSignature, ValueError) as exc:
            raise SecaggError("the mask service key is not signed by the operator") from exc
