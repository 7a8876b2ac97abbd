"""The native load generator (upgen.c): the bytes it sends and the summary it prints,
against a real aiohttp server that keeps every body it receives."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from aiohttp import web

from load_tests import loadgen
from load_tests.bundle import linear_bundle
from server.updates import parse_update

pytestmark = pytest.mark.skipif(
    loadgen.native_binary() is None, reason="no C compiler for the native load generator"
)


class Recorder:
    """An aiohttp server in a thread: keeps each body, answers 200 or ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.json_response({"status": "accepted"}, status=self.status)

    async def _serve(self) -> None:
        app = web.Application(client_max_size=8 << 20)
        app.add_routes([web.post("/v1/tasks/t/updates", self._handle)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/tasks/t/updates"
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Recorder:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def files(tmp_path: Path) -> tuple[bytes, Path, Path]:
    head = loadgen.update_head(linear_bundle("linear_10k").param_shapes, base_version=3)
    head_file, tokens_file = tmp_path / "head.bin", tmp_path / "tokens.txt"
    head_file.write_bytes(head)
    return head, head_file, tokens_file


def test_each_request_is_a_valid_update_with_the_next_token(
    files: tuple[bytes, Path, Path],
) -> None:
    head, head_file, tokens_file = files
    tokens = [f"s1.{i:04d}.sig" + "x" * (i % 300) for i in range(40)]  # fixstr, str8, str16
    tokens_file.write_text("\n".join(tokens) + "\n")

    with Recorder() as server:
        result = loadgen.run_native(server.url, head_file, tokens_file, connections=3, seconds=1.5)

    # 40 tokens for 3 connections: the tokens run out, and each thread says so once
    assert result.non_2xx == 3 and result.socket_errors == 0
    assert result.requests == len(server.bodies) == 40  # every token sent once
    sessions = sorted(parse_update(body).session for body in server.bodies)
    assert sessions == sorted(tokens)
    assert all(body == loadgen.body(head, parse_update(body).session) for body in server.bodies)
    assert 0 < result.p50_ms <= result.p99_ms


def test_cycle_reuses_the_tokens_and_non_2xx_answers_are_counted(
    files: tuple[bytes, Path, Path],
) -> None:
    _, head_file, tokens_file = files
    tokens_file.write_text("a\nb\n")

    with Recorder(status=503) as server:
        result = loadgen.run_native(
            server.url, head_file, tokens_file, connections=2, seconds=1.0, cycle=True
        )

    assert result.requests > 2  # two tokens, used again and again
    assert result.non_2xx == result.requests
    assert {parse_update(body).session for body in server.bodies} == {"a", "b"}


def test_a_server_that_is_not_there_counts_socket_errors(files: tuple[bytes, Path, Path]) -> None:
    _, head_file, tokens_file = files
    tokens_file.write_text("a\n")

    result = loadgen.run_native(
        "http://127.0.0.1:9/v1/x", head_file, tokens_file, connections=1, seconds=0.3, cycle=True
    )

    assert result.requests == 0 and result.socket_errors > 0
