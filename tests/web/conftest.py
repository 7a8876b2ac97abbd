"""Fixtures for the web SDK tests: one real server, fault proxies, Node device configs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.process import ServerProcess
from tests.sdk.proxy import FaultProxy
from tests.server.fleet import create_task
from tests.web.support import QUICK, local_data


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory, exports_dir: Path) -> Iterator[ServerProcess]:
    """One real ``asyncfl serve`` for the web tests; each test isolates by task id."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("web-server"), env={"ASYNCFL_EXPORTS_DIR": str(exports_dir)}
    )
    proc.start()
    yield proc
    proc.stop(timeout_s=10)


@pytest.fixture
async def task(server: ServerProcess) -> str:
    task_id = f"w-{uuid.uuid4().hex[:8]}"
    await create_task(server, task_id, concurrency=100)
    return task_id


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(server.port).start()
    yield p
    await p.close()


DeviceConfig = Callable[..., dict[str, Any]]


@pytest.fixture
def device_config(server: ServerProcess, tmp_path: Path) -> DeviceConfig:
    """``device_config(url, task, **overrides)``: a harness config with local data."""
    data = local_data(tmp_path / "data.msgpack")

    def make(url: str, task: str, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "serverUrl": url,
            "task": task,
            "enrollmentKey": server.enrollment_key,
            "storage": str(tmp_path / "device"),
            "backend": "node",
            "data": str(data),
            "options": dict(QUICK),
        }
        config.update(overrides)
        return config

    return make
