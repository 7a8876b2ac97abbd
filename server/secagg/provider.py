"""Where the server finds its mask service: a URL, or (embedded) a child process.

``ASYNCFL_SECAGG_URL`` names a mask service run apart (another machine, another
operator: the production setup). Without it, the embedded server starts one itself the
first time a secure-aggregation task needs it (``asyncfl secagg serve`` in a child
process with its own key and SQLite store under ``<data dir>/secagg``), so the feature
works with zero setup, and stops it at shutdown. A child that exits is started again on
the next call (same key, same store: the seeds it held are still there); a child whose
server died (kill -9) exits by itself (``--parent-pid``). Its pid is in
``<data dir>/secagg/child.pid``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from server.errors import Unavailable
from server.secagg.client import MaskClient

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class MaskServiceProvider:
    def __init__(self, *, url: str, token: str, child_dir: Path | None) -> None:
        self._url = url
        # a child only ever talks to this process: any fresh token will do
        self._token = token or (secrets.token_urlsafe(24) if not url else "")
        self._child_dir = child_dir
        self._client: MaskClient | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> MaskClient:
        if self._client is not None and not self._child_died():
            return self._client
        async with self._lock:
            if self._child_died():  # same key and store: a new child picks up its seeds
                logger.warning("the mask service child exited; starting it again")
                await self._client_closed()
                self._proc = None
            if self._client is None:
                url = self._url or await self._start_child()
                self._client = MaskClient(url, self._token)
        return self._client

    def _child_died(self) -> bool:
        return self._proc is not None and self._proc.poll() is not None

    async def _client_closed(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _start_child(self) -> str:
        if self._child_dir is None:
            raise Unavailable(
                "no mask service is configured (ASYNCFL_SECAGG_URL)", code="secagg_unavailable"
            )
        return await asyncio.to_thread(self._spawn, self._child_dir)

    def _spawn(self, directory: Path) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        port_file = directory / f"port.{secrets.token_hex(4)}"
        log = open(directory / "secagg.log", "ab")  # noqa: SIM115 - the child owns it
        cmd = [sys.executable, "-m", "server.cli", "secagg", "serve", "--data-dir", str(directory)]
        cmd += ["--port", "0", "--port-file", str(port_file), "--parent-pid", str(os.getpid())]
        env = {**os.environ, "ASYNCFL_SECAGG_TOKEN": self._token}
        self._proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._stop_child()
                raise Unavailable(
                    f"the mask service did not start; see {directory / 'secagg.log'}",
                    code="secagg_unavailable",
                )
            time.sleep(0.05)
        port = int(port_file.read_text())
        port_file.unlink(missing_ok=True)
        (directory / "child.pid").write_text(str(self._proc.pid))
        logger.info("started a mask service (pid %d) on port %d", self._proc.pid, port)
        return f"http://127.0.0.1:{port}"

    def _stop_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def close(self) -> None:
        await self._client_closed()
        await asyncio.to_thread(self._stop_child)
