"""Retry schedule: exponential backoff with full jitter, Retry-After honoured, and only
for failures another attempt can cure. A scripted in-process transport stands in for
the network; sleeps are recorded, not waited."""

from __future__ import annotations

import random
from collections.abc import Mapping

import pytest

from client_sdk.api import ServerApi, parse_retry_after
from client_sdk.errors import ServerError, TransportError
from client_sdk.retry import Retrier, RetryPolicy
from client_sdk.transport import Response
from client_sdk.wire import pack

OK = Response(200, {"Content-Type": "application/msgpack"}, pack({"status": "accepted"}))


def _error(status: int, code: str, retry_after: str | None = None) -> Response:
    headers = {"Content-Type": "application/msgpack"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Response(status, headers, pack({"error": {"code": code, "message": code}}))


class ScriptedTransport:
    """Answers requests from a script; an exception in it is raised as a lost answer."""

    def __init__(self, script: list[Response | Exception]) -> None:
        self.script = list(script)
        self.calls = 0

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def close(self) -> None:
        return None


def _api(script: list[Response | Exception], policy: RetryPolicy) -> tuple[ServerApi, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retrier = Retrier(policy, sleep=sleep, rng=random.Random(0))
    return ServerApi(ScriptedTransport(script), retrier=retrier), waits


async def test_connect_errors_5xx_and_429_are_retried_until_an_answer() -> None:
    script: list[Response | Exception] = [
        TransportError("refused"),
        _error(503, "unavailable"),
        _error(500, "internal_error"),
        _error(429, "rate_limited"),
        _error(409, "upload_in_progress"),
        OK,
    ]
    api, waits = _api(script, RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=8.0))

    ack = await api.upload("t", b"body")

    assert ack == {"status": "accepted"}
    assert len(waits) == 5
    # full jitter: the n-th wait is uniform in [0, min(cap, base * 2^(n-1))]
    for n, wait in enumerate(waits, start=1):
        assert 0.0 <= wait <= min(8.0, 2.0 ** (n - 1))


async def test_retry_after_is_a_floor_for_the_wait() -> None:
    script: list[Response | Exception] = [_error(503, "draining", "5"), _error(429, "x", "2"), OK]
    api, waits = _api(script, RetryPolicy(base_delay_s=0.01, max_delay_s=0.1))

    await api.upload("t", b"body")

    assert waits == [5.0, 2.0]


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_tensor"), (401, "invalid_session"), (409, "session_used"), (410, "expired")],
)
async def test_answers_that_another_attempt_cannot_change_are_not_retried(
    status: int, code: str
) -> None:
    api, waits = _api([_error(status, code), OK], RetryPolicy())

    with pytest.raises(ServerError) as caught:
        await api.upload("t", b"body")

    assert (caught.value.status, caught.value.code, waits) == (status, code, [])


async def test_the_last_error_is_raised_when_attempts_run_out() -> None:
    script: list[Response | Exception] = [TransportError(f"cut {i}") for i in range(3)]
    api, waits = _api(script, RetryPolicy(max_attempts=3))

    with pytest.raises(TransportError, match="cut 2"):
        await api.upload("t", b"body")

    assert len(waits) == 2


async def test_no_retry_happens_past_the_time_allowed() -> None:
    api, waits = _api([_error(503, "unavailable", "120"), OK], RetryPolicy(max_elapsed_s=60.0))

    with pytest.raises(ServerError):
        await api.upload("t", b"body")

    assert waits == []


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
