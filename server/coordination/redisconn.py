"""The Redis connection and the one place Redis errors become asyncfl errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.errors import Unavailable


def connect(url: str) -> Redis:
    """A client over a connection pool (bytes in, bytes out; hiredis parses when present)."""
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=15,
        max_connections=256,
    )


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Translate Redis failures into a 503 the client retries (with Retry-After)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise Unavailable(f"{what}: redis unavailable ({exc})", code="redis_unavailable") from exc
