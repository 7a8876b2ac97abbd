"""``python -m client_sdk.bench``: what one device costs, measured against a real server.

Starts ``asyncfl serve`` in its own process (``python -m server.cli serve --port 0``),
creates a task over the admin HTTP API (the MLP; one update per version, so every round
trains on a new version), then runs N rounds of check-in / train / upload with one
:class:`~client_sdk.Client` in this process, which imports neither torch nor server
code: the peak RSS reported is the SDK's alone. The last line printed is JSON::

    {"rounds", "peak_rss_mb", "train_ms_median", "bytes_up_per_round",
     "bytes_down_per_round", ...}

``bytes_down_per_round`` counts every response body after the first round (parameters,
check-in answer, upload acknowledgement); ``graph_bytes_after_first`` shows the cache at
work and ``param_bytes_per_round`` the parameters alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from client_sdk import (
    AiohttpTransport,
    ArrayDataSource,
    Client,
    ClientOptions,
    Credentials,
    EligibilityPolicy,
    NoSlot,
    SdkError,
    Trained,
)

TASK = "bench"
FEATURES, CLASSES = 64, 10  # the zoo's MLP and logreg take digits (8x8 images)


class LocalServer:
    """``asyncfl serve`` as a child process on a free loopback port."""

    def __init__(self, data_dir: Path, exports_dir: Path) -> None:
        self.data_dir = data_dir
        self.admin_token = secrets.token_urlsafe(24)
        self.enrollment_key = secrets.token_urlsafe(24)
        self.env = {
            **os.environ,
            "ASYNCFL_DATA_DIR": str(data_dir),
            "ASYNCFL_EXPORTS_DIR": str(exports_dir),
            "ASYNCFL_ADMIN_TOKEN": self.admin_token,
            "ASYNCFL_ENROLLMENT_KEY": self.enrollment_key,
            "ASYNCFL_SECRET_KEY": secrets.token_urlsafe(24),
        }
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.data_dir / "port"
        cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", "0", "--port-file", str(port_file)]
        with open(self.data_dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self.url or not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start; see {self.data_dir / 'server.log'}")
            port = port_file.read_text().strip() if port_file.exists() else ""
            self.url = f"http://127.0.0.1:{port}" if port else ""
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _admin(server: LocalServer, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    timeout = aiohttp.ClientTimeout(total=600)
    async with (
        aiohttp.ClientSession(headers=headers, timeout=timeout) as http,
        http.request(method, server.url + path, json=body) as resp,
    ):
        if resp.status >= 400:
            raise SystemExit(f"admin {method} {path}: {resp.status} {await resp.text()}")
        return await resp.json()


async def _wait_for_version(server: LocalServer, above: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await _admin(server, "GET", f"/admin/v1/tasks/{TASK}")
        if status["version"] > above:
            return
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace, server: LocalServer, storage: Path) -> dict[str, Any]:
    await _admin(
        server,
        "POST",
        "/admin/v1/tasks",
        {
            "id": TASK,
            "model": args.model,
            "config": {
                "concurrency": 10,
                "plan": {"lr": 0.1, "batch_size": 32, "epochs": 1},
                "aggregation": {"aggregation_goal": 1, "optimizer": {"name": "fedavg"}},
            },
        },
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.examples, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=args.examples)
    transport = AiohttpTransport(server.url)
    client = Client(
        server.url,
        TASK,
        Credentials(enrollment_key=server.enrollment_key),
        ArrayDataSource(x, y),
        storage,
        policy=EligibilityPolicy.always(),
        options=ClientOptions(seed=0),
        transport=transport,
    )
    train_ms: list[float] = []
    up: list[int] = []
    down: list[int] = []
    graph_after_first = params_after_first = 0
    try:
        while len(train_ms) < args.rounds:
            sent, received = transport.bytes_sent, transport.bytes_received
            traffic = (client.traffic.graph_bytes, client.traffic.param_bytes)
            result = await client.run_once()
            if isinstance(result, NoSlot):
                await asyncio.sleep(min(result.retry_after, 1.0))
                continue
            if not isinstance(result, Trained):
                raise SystemExit(f"round {len(train_ms) + 1}: {result}")
            train_ms.append(result.train_s * 1000)
            up.append(transport.bytes_sent - sent)
            down.append(transport.bytes_received - received)
            if len(train_ms) > 1:
                graph_after_first += client.traffic.graph_bytes - traffic[0]
                params_after_first += client.traffic.param_bytes - traffic[1]
            if not args.json:
                print(
                    f"round {len(train_ms):2d}: v{result.version} {result.steps} steps "
                    f"{train_ms[-1]:.1f} ms, up {up[-1]} B, down {down[-1]} B",
                    flush=True,
                )
            await _wait_for_version(server, result.version)
    finally:
        await transport.close()
    later = max(1, len(down) - 1)
    return {
        "rounds": len(train_ms),
        "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
        "train_ms_median": round(statistics.median(train_ms), 3),
        "bytes_up_per_round": round(statistics.mean(up)),
        "bytes_down_per_round": round(sum(down[1:]) / later),
        "bytes_down_first_round": down[0],
        "param_bytes_per_round": round(params_after_first / later),
        "graph_bytes_after_first": graph_after_first,
        "model": args.model,
        "torch_imported": "torch" in sys.modules,
        "server_code_imported": any(m.split(".")[0] == "server" for m in sys.modules),
    }


def peak_rss_kb() -> int:
    """This process's peak RSS. ``/proc/self/status`` VmHWM belongs to this program alone;
    ``ru_maxrss`` survives ``exec`` on Linux and can report the parent's peak (a bench
    started from a 700 MB test runner would read 700 MB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client_sdk.bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--model", default="mlp", help="zoo model (default mlp)")
    parser.add_argument("--examples", type=int, default=300, help="local examples")
    parser.add_argument(
        "--exports-dir",
        type=Path,
        default=Path(
            os.environ.get("ASYNCFL_EXPORTS_DIR") or Path(tempfile.gettempdir()) / "asyncfl-exports"
        ),
        help="cache of zoo model exports (kept between runs)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (the first round fills the cache)")
    workdir = Path(tempfile.mkdtemp(prefix="asyncfl-sdk-bench-"))
    server = LocalServer(workdir / "server", args.exports_dir)
    try:
        if not args.json:
            print(f"starting asyncfl serve in {workdir} ...", flush=True)
        server.start()
        result = asyncio.run(run(args, server, workdir / "device"))
    except SdkError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
