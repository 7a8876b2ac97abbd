"""The baseline for bench_ingest.py: the fastest obvious aiohttp ingest handler.

One route, ``POST /ingest``: read the whole body the usual way (``await
request.read()``), view it as float32 and ``np.add`` it into an accumulator. No session,
validation, log or fold. It runs like ``asyncfl serve``: one process, the default
asyncio loop, no access log, backlog 4096, loopback only.

    python -m load_tests.bare_server --port-file PATH
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import numpy as np
from aiohttp import web

ACCUMULATOR = web.AppKey("accumulator", dict)
MAX_BODY = 64 * 1024 * 1024


async def ingest(request: web.Request) -> web.Response:
    data = await request.read()
    n = len(data) // 4
    accumulators = request.app[ACCUMULATOR]
    acc = accumulators.get(n)
    if acc is None:
        acc = accumulators[n] = np.zeros(n, np.float32)
    np.add(acc, np.frombuffer(data, np.float32, count=n), out=acc)
    return web.json_response({"status": "accepted"})


def create_app() -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[ACCUMULATOR] = {}
    app.add_routes([web.post("/ingest", ingest)])
    return app


async def serve(port_file: Path, app: web.Application | None = None) -> None:
    """Serve ``app`` (default: the bare handler's) on a free loopback port, written to
    ``port_file``, until SIGINT or SIGTERM."""
    runner = web.AppRunner(app or create_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(runner.addresses[0][1]))
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    np.seterr(all="ignore")  # the bytes are msgpack framing + floats: overflow is fine
    asyncio.run(serve(parser.parse_args().port_file))


if __name__ == "__main__":
    main()
