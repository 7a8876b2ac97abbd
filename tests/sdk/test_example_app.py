"""examples/device_app.py is a complete app: it runs against a real server."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from server.process import ServerProcess
from tests.server.fleet import status

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "device_app.py"


async def test_the_example_app_trains_against_a_local_server(
    server: ServerProcess, task: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ASYNCFL_URL": server.url,
        "ASYNCFL_TASK": task,
        "ASYNCFL_ENROLLMENT_KEY": server.enrollment_key,
        "ASYNCFL_DEVICE_DIR": str(tmp_path / "device"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(APP),
        "2",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)

    assert proc.returncode == 0, err.decode()
    assert [line.split()[0] for line in out.decode().splitlines()].count("upload") == 2
    assert (await status(server, task))["updates_accepted"] == 2
    assert (tmp_path / "device" / "examples.db").exists()


def test_the_example_app_fits_in_40_lines() -> None:
    assert len(APP.read_text().splitlines()) <= 40
