"""A complete device app embedding the asyncfl SDK; run it against `asyncfl serve`:

    ASYNCFL_URL=http://127.0.0.1:8080 ASYNCFL_TASK=digits ASYNCFL_ENROLLMENT_KEY=... \
        python examples/device_app.py [ROUNDS]
"""

import os
import sys
from pathlib import Path

import numpy as np

from client_sdk import ClientOptions, Credentials, ExampleStore, ManualDeviceState, SyncClient


def main(rounds: int) -> None:
    storage = Path(os.environ.get("ASYNCFL_DEVICE_DIR", ".device"))
    examples = ExampleStore(storage / "examples.db", x_shape=(64,), max_examples=5000)
    if examples.count() == 0:  # stands in for examples the app records as it is used
        rng = np.random.default_rng(0)
        examples.add_many(rng.random((200, 64), np.float32), rng.integers(0, 10, 200))
    # the app keeps this current from OS callbacks (power, network, screen)
    device = ManualDeviceState(charging=True, unmetered=True, idle=True, battery=0.8)
    with SyncClient(
        os.environ["ASYNCFL_URL"],
        os.environ["ASYNCFL_TASK"],
        Credentials(enrollment_key=os.environ["ASYNCFL_ENROLLMENT_KEY"]),
        examples,
        storage,
        device_state=device,
        options=ClientOptions(round_interval_s=1.0),
        on_event=lambda event: print(event.kind, dict(event.data), flush=True),
    ) as client:
        client.run_forever(max_rounds=rounds)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
