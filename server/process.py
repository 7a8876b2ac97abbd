"""Start and stop ``asyncfl serve`` as a child process (demo, tests, load tools).

The child listens on a free loopback port it picks itself and reports it through a
port file; it is stopped by its PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from server.errors import AsyncflError


class ServerProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        admin_token: str | None = None,
        enrollment_key: str | None = None,
        secret_key: str | None = None,
        command: str = "serve",
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.host = host
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.enrollment_key = enrollment_key or secrets.token_urlsafe(24)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.command = command
        self.env = {
            **os.environ,
            "ASYNCFL_DATA_DIR": str(data_dir),
            "ASYNCFL_ADMIN_TOKEN": self.admin_token,
            "ASYNCFL_ENROLLMENT_KEY": self.enrollment_key,
            "ASYNCFL_SECRET_KEY": self.secret_key,
            **(env or {}),
        }
        self.log_file = log_file or data_dir / "server.log"
        self.args = args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise AsyncflError("server is not running")
        return self.proc.pid

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / f"port.{secrets.token_hex(4)}"
        port = str(self.port or 0)
        cmd = [
            sys.executable,
            "-m",
            "server.cli",
            self.command,
            "--host",
            self.host,
            "--port",
            port,
            "--port-file",
            str(port_file),
            *self.args,
        ]
        log = open(self.log_file, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        self._wait_until(port_file.exists, deadline, f"did not start in {timeout_s}s")
        self.port = int(port_file.read_text())
        port_file.unlink(missing_ok=True)
        self._wait_until(self.ready, deadline, f"not ready in {timeout_s}s")
        return self

    def _wait_until(self, condition: Callable[[], bool], deadline: float, what: str) -> None:
        """Poll ``condition`` until it holds; kill the child if it dies or time runs out."""
        while not condition():
            self._check_alive()
            if time.monotonic() > deadline:
                self.kill()
                raise AsyncflError(f"server {what}; see {self.log_file}")
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise AsyncflError(f"server exited with {self.proc.returncode}:\n{tail}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def signal(self, signum: int) -> None:
        """Send a signal (SIGSTOP / SIGCONT in failover drills)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        """kill -9: no drain, no cleanup (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, timeout_s: float = 60.0) -> ServerProcess:
        """Start again on the same port and data dir."""
        return self.start(timeout_s)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
