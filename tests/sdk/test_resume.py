"""An app killed mid-training (kill -9 of a real process) resumes cleanly: it continues
the session while its deadline allows, or drops it and checks in again."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from client_sdk import Event, Trained
from server.process import ServerProcess
from tests.sdk.proxy import FaultProxy
from tests.sdk.support import ClientFactory
from tests.server.fleet import status

REPO = Path(__file__).resolve().parents[2]

# A device app that trains slowly (50 ms per batch) and says when training started.
SLOW_APP = """
import asyncio, sys, time
import numpy as np
from client_sdk import ArrayDataSource, Client, Credentials, EligibilityPolicy

class Slow(ArrayDataSource):
    def batches(self, batch_size, *, seed=None):
        for batch in super().batches(batch_size, seed=seed):
            time.sleep(0.05)
            yield batch

url, task, key, storage = sys.argv[1:5]
rng = np.random.default_rng(0)
data = Slow(rng.normal(size=(4000, 64)).astype(np.float32), rng.integers(0, 10, 4000))

def on_event(event):
    if event.kind == "progress":
        print("training", flush=True)

client = Client(url, task, Credentials(enrollment_key=key), data, storage,
                policy=EligibilityPolicy.always(), on_event=on_event)
asyncio.run(client.run_once())
"""


async def _kill_mid_training(proxy: FaultProxy, task: str, key: str, storage: Path) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SLOW_APP,
        proxy.url,
        task,
        key,
        str(storage),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)  # type: ignore[union-attr]
        assert line.strip() == b"training"
    finally:
        proc.kill()  # kill -9: no cleanup runs in the app
        await proc.wait()
    return json.loads((storage / "sessions" / f"{task}.json").read_text())


async def test_an_app_killed_mid_training_continues_its_session(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory, tmp_path: Path
) -> None:
    storage = tmp_path / "device"
    left_open = await _kill_mid_training(proxy, task, server.enrollment_key, storage)
    events: list[Event] = []

    result = await make_client(
        proxy.url, task, server.enrollment_key, storage=storage, on_event=events.append
    ).run_once()

    assert left_open["phase"] == "training"
    assert isinstance(result, Trained) and result.resumed
    assert result.update_id == left_open["session_id"]
    assert proxy.count(f"/v1/tasks/{task}/checkin") == 1  # the killed app's only
    assert events[0].kind == "resume" and events[0].data["action"] == "continue"
    assert (await status(server, task))["updates_accepted"] == 1


async def test_an_app_restarted_after_the_deadline_drops_the_session(
    server: ServerProcess, task: str, proxy: FaultProxy, make_client: ClientFactory, tmp_path: Path
) -> None:
    storage = tmp_path / "device"
    left_open = await _kill_mid_training(proxy, task, server.enrollment_key, storage)
    events: list[Event] = []

    result = await make_client(
        proxy.url,
        task,
        server.enrollment_key,
        storage=storage,
        on_event=events.append,
        clock=lambda: time.time() + 3600,  # the app comes back an hour later
    ).run_once()

    assert isinstance(result, Trained) and not result.resumed
    assert result.update_id != left_open["session_id"]
    assert events[0].kind == "resume" and events[0].data["action"] == "drop"
    assert proxy.count(f"/v1/tasks/{task}/checkin") == 2
    assert (await status(server, task))["updates_accepted"] == 1
