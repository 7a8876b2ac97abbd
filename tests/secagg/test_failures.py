"""Secure aggregation when things fail: a mask service that is down answers 503 with
Retry-After and loses nothing; kill -9 of the mask service or of the server during
uploads keeps exactly-once, checked id by id (every acknowledged update is applied to one
committed version or held in the restored buffer, never both, never missing)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from client_sdk.secagg import TrustAnchor
from server.clientfleet import FLEET_OPTIONS
from server.secagg.keys import MaskKeys
from tests.conftest import ServerProcessFactory
from tests.secagg.test_end_to_end import SECURE, _pinned
from tests.server.fleet import Fleet, create_task, status, wait_for
from tests.server.test_crash import _applied, _buffered


class MaskServiceProcess:
    """``asyncfl secagg serve`` run apart, as in production, on a port that survives
    restarts (the server's ``ASYNCFL_SECAGG_URL`` names it)."""

    def __init__(self, data_dir: Path, database_url: str = "") -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.token = secrets.token_urlsafe(24)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MaskServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "server.cli", "secagg", "serve"]
        cmd += ["--data-dir", str(self.data_dir), "--port", str(self.port)]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        env = {**os.environ, "ASYNCFL_SECAGG_TOKEN": self.token}
        with open(self.data_dir / "service.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._healthy():
            assert self.proc.poll() is None, (self.data_dir / "service.log").read_text()
            assert time.monotonic() < deadline, "the mask service did not start"
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def trust(self) -> TrustAnchor:
        return TrustAnchor(mask_key=MaskKeys.load_or_create(self.data_dir).public)


def _unavailable_answers(metrics: str) -> float:
    """503s the upload route answered, from the server's own /metrics."""
    total = 0.0
    for line in metrics.splitlines():
        head = line.startswith("asyncfl_http_requests_total{")
        if head and 'status="503"' in line and "updates" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _metrics(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


async def _exactly_once(server_dir: Path, acked: set[str]) -> tuple[list[str], list[str]]:
    url = f"sqlite+aiosqlite:///{server_dir / 'asyncfl.db'}"
    applied, in_versions, head = await _applied(url)
    buffered = _buffered(server_dir, head)
    assert len(applied) == len(set(applied)) == in_versions
    assert not set(applied) & set(buffered)
    missing = acked - set(applied) - set(buffered)
    assert not missing, f"acknowledged but neither applied nor buffered: {sorted(missing)}"
    return applied, buffered


async def test_a_mask_service_down_and_killed_loses_nothing(
    start_server: ServerProcessFactory, tmp_path: Path
) -> None:
    service = MaskServiceProcess(tmp_path / "mask-service").start()
    try:
        server = start_server(
            env={"ASYNCFL_SECAGG_URL": service.url, "ASYNCFL_SECAGG_TOKEN": service.token}
        )
        await create_task(server, **SECURE)
        options = dataclasses.replace(FLEET_OPTIONS, secagg_trust=service.trust())
        fleet = await Fleet(server, options=options).enroll(6)
        stop = asyncio.Event()
        training = asyncio.create_task(fleet.run_until(stop.is_set))
        while len(fleet.acked) < 12:
            await asyncio.sleep(0.02)
        service.kill()  # kill -9 in the middle of uploads and releases
        await asyncio.sleep(0.5)
        accepted_down = (await status(server))["updates_accepted"]
        await asyncio.sleep(2.0)
        down = await status(server)
        assert down["updates_accepted"] == accepted_down  # no seed stored: nothing acked
        assert _unavailable_answers(_metrics(server.url)) > 0
        service.start()  # the same key and store, on the same port
        while len(fleet.acked) < 30:
            await asyncio.sleep(0.02)
        stop.set()
        await training
        await fleet.close()
        acked = {ack["update_id"] for ack in fleet.acked}
        after = await wait_for(
            server, lambda s: s["updates_accepted"] - s["updates_applied"] < 3, timeout_s=60
        )
        assert after["updates_dropped"] == 0
        server.stop()
        applied, buffered = await _exactly_once(server.data_dir, acked)
        assert set(applied) | set(buffered) == acked  # and nothing that was not acknowledged
    finally:
        service.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_kill_9_of_the_server_with_its_mask_service_child_keeps_exactly_once(
    start_server: ServerProcessFactory,
) -> None:
    server = start_server()
    trust = _pinned(server.data_dir)
    await create_task(server, **SECURE)
    options = dataclasses.replace(FLEET_OPTIONS, secagg_trust=trust)
    fleet = await Fleet(server, options=options).enroll(6)
    stop = asyncio.Event()
    training = asyncio.create_task(fleet.run_until(stop.is_set))
    while len(fleet.acked) < 20:
        await asyncio.sleep(0.02)
    child = int((server.data_dir / "secagg" / "child.pid").read_text())
    server.kill()  # kill -9: the child must not outlive it
    acked = {ack["update_id"] for ack in fleet.acked}
    await asyncio.sleep(0.3)
    stop.set()
    await training
    await fleet.close()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not _alive(child), "the mask service child outlived its server"

    server.restart()  # a new child, the same key and seeds: pending releases complete
    after = await wait_for(server, lambda s: s["updates_buffered"] < 3, timeout_s=60)
    assert after["updates_dropped"] == 0
    server.stop()
    await _exactly_once(server.data_dir, acked)
