"""Fixtures for the SDK tests: a real server per module, tasks, proxies and clients."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from client_sdk import Client
from server.process import ServerProcess
from tests.sdk.proxy import FaultProxy
from tests.sdk.support import ClientFactory
from tests.server.fleet import create_task


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Iterator[ServerProcess]:
    """One real ``asyncfl serve`` for the SDK tests; each test isolates by task id."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("sdk-server"), env={"ASYNCFL_EXPORTS_DIR": str(exports_dir)}
    )
    proc.start()
    yield proc
    proc.stop(timeout_s=10)


@pytest.fixture
async def task(server: ServerProcess) -> str:
    """A fresh logreg task on the module's server (high concurrency: chaos wastes slots)."""
    task_id = f"t-{uuid.uuid4().hex[:8]}"
    await create_task(server, task_id, concurrency=100)
    return task_id


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(server.port).start()
    yield p
    await p.close()


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[ClientFactory]:
    clients: list[Client] = []

    def make(url: str, task: str, key: str, **kwargs: Any) -> Client:
        client = ClientFactory.build(tmp_path, url, task, key, **kwargs)
        clients.append(client)
        return client

    yield ClientFactory(make)
    for client in clients:
        await client.close()
