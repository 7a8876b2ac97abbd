"""The bench's logic side: asyncfl's own upload use case without durability, over HTTP."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from client_sdk.wire import CONTENT_TYPE, unpack
from load_tests import loadgen
from load_tests.bench_ingest import ChildServer, mint_sessions
from load_tests.bundle import linear_bundle
from server.coordination.tokens import SessionClaims, TokenSigner


async def _post(url: str, body: bytes) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": CONTENT_TYPE}) as resp,
    ):
        raw = await resp.read()
        return resp.status, unpack(raw) if resp.content_type == CONTENT_TYPE else raw


async def test_an_update_is_folded_once_and_forged_or_reused_sessions_are_refused(
    tmp_path: Path,
) -> None:
    head = loadgen.update_head(linear_bundle("linear_1k").param_shapes, base_version=0)
    tokens = mint_sessions("s3cret", 3)
    args = ("--secret", "s3cret", "--model", "linear_1k", "--goal", "2")
    with ChildServer(tmp_path, "logic_server", *args) as logic:
        first = await _post(logic.url, loadgen.body(head, tokens[0]))
        again = await _post(logic.url, loadgen.body(head, tokens[0]))
        forged = await _post(logic.url, loadgen.body(head, tokens[1][:-4] + "AAAA"))
        second = await _post(logic.url, loadgen.body(head, tokens[1]))
        third = await _post(logic.url, loadgen.body(head, tokens[2]))
        garbage = await _post(logic.url, b"\xc1not msgpack")
        lapsed = SessionClaims("lapsed", "bench", "d", 0, 1.0, 2.0)
        expired = await _post(
            logic.url, loadgen.body(head, TokenSigner("s3cret").session_token(lapsed))
        )

    assert first[0] == 200 and isinstance(first[1], dict)
    assert first[1]["status"] == "accepted" and first[1]["staleness"] == 0
    # the same session again: the stored acknowledgement, applied once
    assert again[0] == 200 and isinstance(again[1], dict) and again[1]["duplicate"] is True
    assert forged[0] == 401
    assert second[0] == 200 and isinstance(second[1], dict)
    assert second[1]["staleness"] == 0
    # K = 2: the second update cut version 1, so the third (trained from 0) is 1 stale
    assert third[0] == 200 and isinstance(third[1], dict) and third[1]["staleness"] == 1
    assert garbage[0] == 400
    assert expired[0] == 410


def test_the_logic_server_needs_the_token_secret(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not start"), ChildServer(tmp_path, "logic_server"):
        pass
