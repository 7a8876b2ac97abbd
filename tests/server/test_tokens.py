"""Signed tokens: valid ones verify; forged, corrupt or foreign ones do not."""

from __future__ import annotations

import pytest

from server.coordination.tokens import SessionClaims, TokenSigner
from server.errors import SessionError, Unauthorized

CLAIMS = SessionClaims("sid1", "task-a", "dev1", 3, 1000.0, 1240.0)


def test_session_token_round_trips() -> None:
    signer = TokenSigner("secret")
    assert signer.verify_session(signer.session_token(CLAIMS)) == CLAIMS


def test_session_token_signed_with_another_secret_is_refused() -> None:
    token = TokenSigner("other").session_token(CLAIMS)
    with pytest.raises(SessionError) as info:
        TokenSigner("secret").verify_session(token)
    assert info.value.code == "invalid_session"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],
        lambda t: t.replace("s1.", "d1.", 1),
        lambda t: t + ".x",
        lambda t: "",
        lambda t: "s1.!!!.???",
    ],
)
def test_tampered_session_tokens_are_refused(mangle: object) -> None:
    signer = TokenSigner("secret")
    token = mangle(signer.session_token(CLAIMS))  # type: ignore[operator]
    with pytest.raises(SessionError):
        signer.verify_session(token)


def test_payload_swapped_between_tokens_fails_the_signature() -> None:
    signer = TokenSigner("secret")
    a = signer.session_token(CLAIMS).split(".")
    b = signer.session_token(SessionClaims("sid2", "task-b", "dev1", 3, 1000.0, 1240.0)).split(".")
    with pytest.raises(SessionError):
        signer.verify_session(".".join([a[0], b[1], a[2]]))


def test_expiry_is_reported_by_the_claims() -> None:
    assert not CLAIMS.expired(1240.0)
    assert CLAIMS.expired(1240.1)


def test_device_tokens_verify_and_do_not_pass_as_sessions() -> None:
    signer = TokenSigner("secret")
    token = signer.device_token("dev42")
    assert signer.verify_device(token) == "dev42"
    with pytest.raises(SessionError):
        signer.verify_session(token)
    with pytest.raises(Unauthorized):
        signer.verify_device(signer.session_token(CLAIMS))
