"""The mask service's long-term X25519 key pair, and the operator's Ed25519 vouching key.

The private key is 32 raw bytes in ``<data dir>/mask_key`` (mode 0600), made at the
first start. A device accepts the public key only if it is pinned in the app or signed
by an operator key the app ships (:class:`client_sdk.secagg.TrustAnchor`): the
operator signs it once with ``asyncfl secagg sign``, which writes
``<data dir>/mask_key.sig``; the service hands the signature out with its key. This is
the stand-in for a TEE's attestation: it says who vouches for the key, not what code
holds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from client_sdk.secagg import key_message
from server.errors import ConfigError

__all__ = ["MaskKeys", "operator_keygen", "sign_mask_key"]

KEY_FILE = "mask_key"
SIGNATURE_FILE = "mask_key.sig"


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _write_secret(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


@dataclass(frozen=True)
class MaskKeys:
    private: X25519PrivateKey
    public: bytes
    signature: bytes | None

    @classmethod
    def load_or_create(cls, directory: Path) -> MaskKeys:
        path = directory / KEY_FILE
        if path.exists():
            raw = path.read_bytes()
            if len(raw) != 32:
                raise ConfigError(f"{path} is not a 32-byte X25519 private key")
            private = X25519PrivateKey.from_private_bytes(raw)
        else:
            private = X25519PrivateKey.generate()
            _write_secret(
                path, private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            )
        sig_path = directory / SIGNATURE_FILE
        signature = sig_path.read_bytes() if sig_path.exists() else None
        return cls(private, _raw_public(private), signature)


def operator_keygen(path: Path) -> bytes:
    """Make an operator signing key (kept by the operator, never by the server); returns
    its raw public key, the one apps ship."""
    key = Ed25519PrivateKey.generate()
    _write_secret(path, key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_mask_key(operator_key_path: Path, directory: Path) -> bytes:
    """Sign the mask service's public key with the operator key; writes the signature."""
    operator = Ed25519PrivateKey.from_private_bytes(operator_key_path.read_bytes())
    keys = MaskKeys.load_or_create(directory)
    signature = operator.sign(key_message(keys.public))
    (directory / SIGNATURE_FILE).write_bytes(signature)
    return signature
