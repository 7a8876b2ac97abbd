"""Shared fixtures: real server processes, real databases, one export of the test model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.process import ServerProcess
from tests.services import create_postgres_database, drop_postgres_database


@pytest.fixture(scope="session")
def exports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Zoo exports shared by every server a test starts (each model exported once)."""
    shared = os.environ.get("ASYNCFL_TEST_EXPORTS_DIR")
    if shared:
        return Path(shared)
    return tmp_path_factory.mktemp("exports")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using it runs on the embedded SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'asyncfl.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def start_server(tmp_path: Path, exports_dir: Path) -> Iterator[ServerProcessFactory]:
    started: list[ServerProcess] = []

    def start(
        *, database_url: str = "", env: dict[str, str] | None = None, name: str = "server"
    ) -> ServerProcess:
        full_env = {"ASYNCFL_EXPORTS_DIR": str(exports_dir), **(env or {})}
        if database_url:
            full_env["ASYNCFL_DATABASE_URL"] = database_url
            full_env["ASYNCFL_AUTO_MIGRATE"] = "true"
        server = ServerProcess(tmp_path / name, env=full_env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop(timeout_s=10)


class ServerProcessFactory:
    def __call__(
        self, *, database_url: str = "", env: dict[str, str] | None = None, name: str = "server"
    ) -> ServerProcess: ...
