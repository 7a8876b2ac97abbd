"""Enrollment storms: ``python load_tests/bench_enroll.py [--devices N] [--json]``.

Starts the embedded ``asyncfl serve`` (SQLite, fsync on) and enrolls ``--devices``
devices over HTTP at each ``--concurrency`` (requests in flight), as a fleet arriving at
once would; reports enrollments per second, latency percentiles and every status seen,
one JSON line per concurrency. Enrollments are group-committed (the ones arriving while
a transaction is in flight go into the next), so the rate should grow with concurrency
instead of queueing on one transaction and one fsync per device. Exit 1 on any non-201.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repo root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from client_sdk.wire import pack
from load_tests.target import MSGPACK_HEADERS, log, start_server


async def storm(url: str, key: str, devices: int, concurrency: int) -> dict[str, Any]:
    body = pack({"enrollment_key": key, "device_info": {"kind": "load"}})
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    todo = iter(range(devices))

    async def worker(http: aiohttp.ClientSession) -> None:
        for _ in todo:
            started = time.perf_counter()
            async with http.post(
                f"{url}/v1/devices/enroll", data=body, headers=MSGPACK_HEADERS
            ) as resp:
                await resp.read()
                statuses[resp.status] += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e3, 1)

    return {
        "bench": "enroll",
        "devices": devices,
        "concurrency": concurrency,
        "enrollments_per_s": round(devices / elapsed, 1),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3000, help="enrollments per storm")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--json", action="store_true", help="print only the JSON lines")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="asyncfl-enroll-") as tmp:
        server = start_server(Path(tmp) / "server")
        try:
            for concurrency in args.concurrency:
                line = asyncio.run(
                    storm(server.url, server.enrollment_key, args.devices, concurrency)
                )
                ok = ok and set(line["statuses"]) == {"201"}
                if not args.json:
                    log(f"concurrency {concurrency}: {line['enrollments_per_s']}/s")
                print(json.dumps(line), flush=True)
        finally:
            server.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
